"""Loading BUILD files: lazily, one package at a time, only those a request reaches.

A BUILD file is Python (`BUILD.py` in the package directory). It runs with the workspace root on
`sys.path`, so it imports rules like any module. Errors name the BUILD file and line.
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import marshal
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from mbuild.digests import digest_bytes
from mbuild.errors import (
    BuildFileError,
    MbuildError,
    NoSuchPackageError,
    NoSuchTargetError,
    RuleDefinitionError,
    SourceFileError,
    did_you_mean,
)
from mbuild.labels import Label, PatternKind, TargetPattern
from mbuild.model.reads import Reads, recording_environ
from mbuild.model.targets import _CURRENT_PACKAGE, Location, Node, SourceFile, Target, caller_location
from mbuild.model.workspace import BUILD_FILE, CACHE_NOTE, Workspace, claim_directory

# Directories never searched for packages (besides hidden ones and the cache/outputs directories).
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv"})


@dataclass
class Package:
    """The targets one BUILD file declares, in declaration order."""

    name: str
    build_file: Path
    build_file_rel: str
    targets: dict[str, Target] = field(default_factory=dict)
    # Names up to this long are certainly short enough (longer ones are checked part by part).
    name_limit: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.name_limit = min(_MAX_NAME_PART, _MAX_LABEL - len(f"//{self.name}:"))

    @property
    def directory(self) -> Path:
        return self.build_file.parent

    def caller_location(self) -> Location:
        return caller_location(self.build_file_str, self.build_file_rel)

    @property
    def build_file_str(self) -> str:
        return self.__dict__.setdefault("_build_file_str", str(self.build_file))

    def add(self, target: Target) -> None:
        name = target.label.name
        if len(name) > self.name_limit:
            _check_length(target.label)
        if name in self.targets:
            first = self.targets[name].location
            raise RuleDefinitionError(f"duplicate target name {name!r} (first declared at {first})")
        self.targets[name] = target


_MAX_NAME_PART = 255  # a file name's limit: a target's outputs are at <outputs_dir>/<package>/<name>
_MAX_LABEL = 511  # LMDB's largest key: each target's last key and its parts are recorded by label


def _check_length(label: Label) -> None:
    """A RuleDefinitionError if a target's label is too long for the file system or the database."""
    if max(len(part) for part in label.name.split("/")) <= _MAX_NAME_PART and len(str(label)) <= _MAX_LABEL:
        return
    name = label.name
    shown = name if len(name) <= 40 else f"{name[:24]}...{name[-12:]}"
    raise RuleDefinitionError(
        f"target name {shown!r} ({len(name)} characters) is too long: each '/'-separated part of a name may have at most "
        f"{_MAX_NAME_PART} characters (it names a file under the outputs directory), and a label (//package:name) at most {_MAX_LABEL}"
    )


def importable(workspace: Workspace) -> None:
    """Put the workspace root on `sys.path`, as loading does: BUILD files, rules and the functions
    actions call import the workspace's own modules (worker processes get the driver's path)."""
    root = str(workspace.root)
    if root not in sys.path:
        sys.path.insert(0, root)


class Loader:
    """Evaluates BUILD files on demand and resolves labels to targets or source files."""

    def __init__(self, workspace: Workspace, reads: Reads | None = None):
        self.workspace = workspace
        self.reads = reads  # noted here: the environment variables BUILD files look up (model/reads.py)
        self.root = workspace.root
        self._packages: dict[str, Package] = {}
        self._sources: dict[Label, SourceFile] = {}
        self._real_dirs: dict[str, str] = {}  # directory -> its real path (for links leaving the workspace)
        self._root_prefix = os.path.join(str(self.root), "")  # what every real path inside the workspace starts with
        importable(workspace)

    # --- packages ----------------------------------------------------------------------------

    def package(self, name: str) -> Package:
        pkg = self._packages.get(name)
        if pkg is None:
            pkg = self._packages[name] = self._load(name)
        return pkg

    def loaded_packages(self) -> list[Package]:
        return list(self._packages.values())

    def _load(self, name: str) -> Package:
        build_file = self.root / name / BUILD_FILE if name else self.root / BUILD_FILE
        rel = f"{name}/{BUILD_FILE}" if name else BUILD_FILE
        try:
            source = build_file.read_bytes()
        except FileNotFoundError:
            hint = did_you_mean(name, self.all_package_names()) if name else ""
            raise NoSuchPackageError(f"no package '//{name}': {rel} does not exist{hint}") from None
        pkg = Package(name, build_file, rel)
        code = self._compile(source, build_file, rel)
        scope = {"__name__": f"BUILD:{name}", "__file__": str(build_file), "__builtins__": builtins}
        token = _CURRENT_PACKAGE.set(pkg)
        try:
            with recording_environ(self.reads) if self.reads is not None else contextlib.nullcontext():
                exec(code, scope)
        except MbuildError as exc:
            raise BuildFileError(rel, _error_line(exc, str(build_file)), str(exc)) from None
        except KeyboardInterrupt:
            raise  # Ctrl-C while loading: the command stops (exit 130)
        except SystemExit as exc:  # sys.exit() in a BUILD file (or a module it imports) must not end mbuild quietly
            raise BuildFileError(
                rel, _error_line(exc, str(build_file)),
                f"sys.exit({exc.code!r}) called while loading; a BUILD file must not exit (the targets after this line would be missing)",
            ) from None
        except BaseException as exc:  # any error in user code: report where in the BUILD file
            raise BuildFileError(rel, _error_line(exc, str(build_file)), f"{type(exc).__name__}: {exc}") from exc
        finally:
            _CURRENT_PACKAGE.reset(token)
        return pkg

    def _compile(self, source: bytes, build_file: Path, rel: str):
        """Compile a BUILD file, reusing code compiled earlier from identical source at the same path."""
        tag = digest_bytes(source + b"\0" + str(build_file).encode() + sys.version.encode())
        cached = self.workspace.cache_dir / "buildc" / f"{tag}.code"
        try:
            data = cached.read_bytes()
        except OSError:
            data = b""
        # Our own compiler output, keyed by its source digest; unmarshalled only when its own digest
        # (the first 32 bytes) vouches for it: a damaged or altered file is a recompile.
        if len(data) > 32 and digest_bytes(data[32:]).encode() == data[:32]:
            try:
                return marshal.loads(data[32:])
            except (ValueError, EOFError, TypeError):
                pass
        try:
            code = compile(source, str(build_file), "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise BuildFileError(rel, exc.lineno, f"syntax error: {exc.msg}") from None
        try:
            claim_directory(self.workspace.cache_dir, CACHE_NOTE)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{tag}.{os.getpid()}.tmp")
            body = marshal.dumps(code)
            tmp.write_bytes(digest_bytes(body).encode() + body)
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only cache only costs the recompile
        return code

    def all_package_names(self, under: str = "") -> list[str]:
        """Every package at or below `under`, sorted (walks the directory tree)."""
        base = self.root / under if under else self.root
        if not base.is_dir():
            return []
        skip = {self.workspace.cache_dir.resolve(), self.workspace.outputs_dir.resolve()}
        names = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(
                d for d in dirnames
                if not d.startswith(".") and d not in _SKIP_DIRS and (Path(dirpath) / d).resolve() not in skip
            )
            if BUILD_FILE in filenames:
                rel = os.path.relpath(dirpath, self.root)
                names.append("" if rel == "." else Path(rel).as_posix())
        return sorted(names)

    # --- labels ------------------------------------------------------------------------------

    def resolve(self, label: Label, referrer: Target | None = None) -> Node:
        """The target or source file a label names."""
        try:
            pkg = self.package(label.package)
        except NoSuchPackageError as exc:
            if referrer is not None:
                raise NoSuchPackageError(f"{referrer.label} ({referrer.location}) depends on {label}: {exc}") from None
            raise
        target = pkg.targets.get(label.name)
        if target is not None:
            return target
        source = self._sources.get(label)
        if source is not None:
            return source
        path = f"{pkg.build_file_str[: -len(BUILD_FILE)]}{label.name}"  # strings, not pathlib: once per source file
        if os.path.isfile(path):
            if not self.workspace.settings.build.allow_external_symlinks:
                self._refuse_external_link(label, path, referrer)
            source = self._sources[label] = SourceFile(label)
            return source
        hint = did_you_mean(label.name, pkg.targets)
        where = f"{referrer.label} ({referrer.location}) depends on {label}, but " if referrer else ""
        problem = f"no target named {label.name!r} in package '//{label.package}' ({pkg.build_file_rel})"
        if os.path.isdir(path):
            problem += f"; {label.package}/{label.name} is a directory, not a file (use glob() or a filegroup)"
        else:
            problem += " and no such source file"
        raise NoSuchTargetError(where + problem + hint)

    def _refuse_external_link(self, label: Label, path: str, referrer: Target | None) -> None:
        """A SourceFileError if the source file is, or lies under, a symbolic link that leads outside the workspace."""
        parent, leaf = os.path.split(path)
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = self._real_dirs[parent] = os.path.realpath(parent)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_parent, leaf)
        if real.startswith(self._root_prefix):
            return
        link = self._outside_link(Path(path))
        where = f"{referrer.label} ({referrer.location}) depends on {label}, but " if referrer else f"{label}: "
        raise SourceFileError(
            f"{where}{self.workspace.relpath(link)} is a symbolic link to {os.path.realpath(link)}, outside the workspace; "
            "set [build] allow_external_symlinks = true in WORKSPACE.toml to follow such links (the file is keyed by its content)"
        )

    def _outside_link(self, path: Path) -> Path:
        """The first component of `path` (from the root down) that is a link leading outside the workspace."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            if current.is_symlink() and not os.path.realpath(current).startswith(self._root_prefix):
                return current
        return path

    def target(self, label: Label) -> Target:
        node = self.resolve(label)
        if not isinstance(node, Target):
            raise NoSuchTargetError(f"{label} is a source file, not a rule target")
        return node

    def expand(self, pattern: TargetPattern) -> list[Label]:
        """The labels a pattern matches (rule targets only for `:all` and `/...`)."""
        if pattern.kind is PatternKind.LABEL:
            assert pattern.label is not None
            self.resolve(pattern.label)
            return [pattern.label]
        if pattern.kind is PatternKind.ALL:
            return [t.label for t in self.package(pattern.package).targets.values()]
        labels = []
        packages = self.all_package_names(pattern.package)
        if not packages and not (self.root / pattern.package).is_dir():
            raise NoSuchPackageError(f"pattern {pattern}: directory {pattern.package!r} does not exist")
        for name in packages:
            labels.extend(t.label for t in self.package(name).targets.values())
        return labels


def _error_line(exc: BaseException, build_file: str) -> int | None:
    """Line of the BUILD file frame nearest the error."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == build_file:
            line = frame.lineno
    return line


def glob(include: list[str], exclude: list[str] = (), allow_empty: bool = False) -> list[str]:
    """Source files of the current package matching the patterns (`*`, `**`), sorted, as relative names.

    Like Bazel's glob: hidden files and files in sub-packages (directories with their own BUILD.py)
    are not included.
    """
    from mbuild.model.targets import current_package

    pkg = current_package()
    if pkg is None:
        raise RuleDefinitionError("glob() can only be called while a BUILD file is loading")
    base = pkg.directory
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS and not (Path(dirpath) / d / BUILD_FILE).exists()
        )
        rel_dir = os.path.relpath(dirpath, base)
        for f in sorted(filenames):
            if f.startswith(".") or (rel_dir == "." and f == BUILD_FILE):
                continue
            rel = f if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{f}"
            if any(_glob_match(rel, p) for p in include) and not any(_glob_match(rel, p) for p in exclude):
                found.append(rel)
    if not found and not allow_empty:
        raise RuleDefinitionError(f"glob({include!r}) matched no files in {pkg.build_file_rel}'s package")
    return found


def _glob_match(path: str, pattern: str) -> bool:
    """Match a '/'-separated path against a glob where '**' spans directories and '*' does not."""
    parts, pats = path.split("/"), pattern.split("/")

    def match(i: int, j: int) -> bool:
        if j == len(pats):
            return i == len(parts)
        if pats[j] == "**":
            return any(match(k, j + 1) for k in range(i, len(parts) + 1))
        return i < len(parts) and fnmatch.fnmatchcase(parts[i], pats[j]) and match(i + 1, j + 1)

    return match(0, 0)
