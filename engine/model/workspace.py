"""The workspace: the directory holding WORKSPACE.toml, and the settings read from it.

Settings are typed dataclasses, one per TOML table. An unknown table or key, a value of the
wrong type or out of range, is a `WorkspaceError` naming the file and the key (with a "did you mean").
The cache and outputs directories are checked once per command: mbuild deletes and replaces what
is inside them, so it only uses directories it made (they hold its `.gitignore` marker) or new
or empty ones, never the workspace root, an ancestor of it, or one inside the other.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mbuild.errors import WorkspaceError, did_you_mean

WORKSPACE_FILE = "WORKSPACE.toml"
BUILD_FILE = "BUILD.py"
# Written by mbuild into the cache and outputs directories: git ignores them, and it is how mbuild
# knows a directory is its own to delete and replace things in.
MARKER = ".gitignore"
_MARKER_HEAD = b"# written by mbuild"
CACHE_NOTE = "the local cache"
OUTPUTS_NOTE = "everything here is a build output"
# Local jobs are worker processes (an interpreter each, plus a thread in the driver); remote jobs
# are threads or cluster jobs in flight. Past this, threads and memory run out long before it helps.
MAX_JOBS = 256


@dataclass(frozen=True)
class WorkspaceSection:
    """[workspace]"""

    name: str = ""
    # Mixed into every action key: changing it disowns every cache entry made before.
    salt: str = ""


@dataclass(frozen=True)
class BuildSection:
    """[build]"""

    # Local actions at once; 0 means the number of cores.
    jobs: int = 0
    # Local action cache (LMDB) and content-addressed store. Relative to the workspace root.
    cache_dir: str = ".mbuild/cache"
    # Where outputs of requested targets are materialised, one stable directory per target.
    outputs_dir: str = "mbuild-out"
    keep_going: bool = False
    # Source files that are (or lie under) symbolic links to outside the workspace are refused
    # unless this is true; then they are followed and keyed by content like any source file.
    allow_external_symlinks: bool = False


@dataclass(frozen=True)
class RemoteSection:
    """[remote]: a shared cache in a bucket (gs://, s3://) or a shared directory (file://)."""

    url: str = ""  # empty: no remote cache
    # False makes a read-only client: it never writes anything to the remote.
    upload: bool = True
    timeout: float = 5.0  # seconds per request (plus 1 s per MiB moved)
    max_failures: int = 3  # consecutive failures before the client stops asking
    options: dict = field(default_factory=dict)  # fsspec storage options (endpoint_url, token, ...)


@dataclass(frozen=True)
class FraySection:
    """[fray]: where remote-tagged actions (those asking for resources) run."""

    backend: str = "local"  # local (fray's LocalClient, in process) | iris | iris-local
    controller: str = ""  # the Iris controller URL, for backend = "iris"
    remote_jobs: int = 4  # remote-tagged actions at once
    retries: int = 2  # resubmissions of a job lost to its worker dying


@dataclass(frozen=True)
class OutputsSection:
    """[outputs]: where in-place outputs (targets with in_place=True) are written by their actions."""

    prefix: str = ""  # gs://bucket/p, s3://bucket/p, file:///dir or a directory; "" = <cache_dir>/inplace
    options: dict = field(default_factory=dict)  # fsspec storage options (endpoint_url, token, ...)


@dataclass(frozen=True)
class LeaseSection:
    """[lease]: the single-flight lease every action is run under."""

    ttl: float = 90.0  # a lease not renewed for this long is stale and is taken over
    renew: float = 30.0  # heartbeat interval


@dataclass(frozen=True)
class Settings:
    workspace: WorkspaceSection = field(default_factory=WorkspaceSection)
    build: BuildSection = field(default_factory=BuildSection)
    remote: RemoteSection = field(default_factory=RemoteSection)
    fray: FraySection = field(default_factory=FraySection)
    lease: LeaseSection = field(default_factory=LeaseSection)
    outputs: OutputsSection = field(default_factory=OutputsSection)


@dataclass(frozen=True)
class Workspace:
    """A workspace root and its settings, with the derived absolute directories."""

    root: Path
    settings: Settings

    @property
    def cache_dir(self) -> Path:
        return self._resolve(self.settings.build.cache_dir)

    @property
    def outputs_dir(self) -> Path:
        return self._resolve(self.settings.build.outputs_dir)

    @property
    def inplace_prefix(self) -> str:
        """[outputs].prefix resolved: a gs:// or s3:// URL (canonical scheme, no trailing slash) or an
        absolute local directory (relative ones are under the workspace root)."""
        scheme, sep, rest = (prefix := self.settings.outputs.prefix.strip()).partition("://")
        if sep and scheme.lower() != "file":  # gs, gcs, s3, s3a (checked when read)
            return ("gs" if scheme.lower() in ("gs", "gcs") else "s3") + "://" + rest.strip("/")
        if sep:
            return (rest[len("localhost"):] if rest.startswith("localhost/") else rest).rstrip("/") or "/"
        return str(self._resolve(prefix) if prefix else self.cache_dir / "inplace").rstrip("/") or "/"

    @property
    def jobs(self) -> int:
        return self.settings.build.jobs or default_jobs()

    def _resolve(self, setting: str) -> Path:
        path = Path(os.path.expanduser(setting))
        return path if path.is_absolute() else self.root / path

    def package_at(self, directory: Path) -> str | None:
        """The package path of `directory` (`""` at the root), what relative labels typed there
        are relative to; None when `directory` is outside the workspace."""
        try:
            offset = directory.resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        return "" if offset == Path(".") else offset.as_posix()

    def relpath(self, path: Path) -> str:
        """`path` relative to the root, for messages (absolute if outside)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def find_root(start: Path) -> Path:
    """Walk up from `start` to the nearest directory holding WORKSPACE.toml."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / WORKSPACE_FILE).is_file():
            return directory
    raise WorkspaceError(
        f"no {WORKSPACE_FILE} found in {start} or any parent directory; "
        f"create one at your project's root (it may be empty)"
    )


def load_workspace(start: Path | None = None) -> Workspace:
    """The workspace around `start` (default: the current directory), its settings and directories checked."""
    root = find_root(start or Path.cwd())
    workspace = Workspace(root=root, settings=read_settings(root / WORKSPACE_FILE))
    check_directories(workspace)
    return workspace


def default_jobs() -> int:
    """What jobs = 0 means: the number of cores (at most MAX_JOBS)."""
    return min(os.cpu_count() or 1, MAX_JOBS)


def check_jobs(value: int, where: str, minimum: int = 0) -> int:
    """`value` if it is a sane number of jobs at once, else a WorkspaceError naming `where`."""
    if not minimum <= value <= MAX_JOBS:
        zero = " (0 = the number of cores)" if minimum == 0 else ""
        raise WorkspaceError(
            f"{where} must be between {minimum} and {MAX_JOBS}{zero}, got {value}: each job is a process or thread "
            f"of its own, and more than {MAX_JOBS} at once exhaust threads and memory long before they speed anything up"
        )
    return value


_CHOICES = {("fray", "backend"): ("local", "iris", "iris-local")}


def read_settings(path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise WorkspaceError(f"{path.name}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise WorkspaceError(
            f"{path.name}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); TOML files must be UTF-8"
        ) from None
    except OSError as exc:
        raise WorkspaceError(f"{path}: cannot read: {exc.strerror}") from None
    settings = _build(Settings, data, path.name, "")
    for (table, key), choices in _CHOICES.items():
        value = getattr(getattr(settings, table), key)
        if value not in choices:
            raise WorkspaceError(f"{path.name}: [{table}].{key} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}")
    _check_ranges(settings, path.name)
    return settings


def _check_ranges(settings: Settings, file: str) -> None:
    """Numbers and paths that have the right type but would hang, crash, or mean something unintended."""
    check_jobs(settings.build.jobs, f"{file}: [build].jobs")
    check_jobs(settings.fray.remote_jobs, f"{file}: [fray].remote_jobs", minimum=1)
    if not 0 <= settings.fray.retries <= 100:
        raise WorkspaceError(f"{file}: [fray].retries must be between 0 and 100, got {settings.fray.retries}")
    for key in ("cache_dir", "outputs_dir"):
        if not getattr(settings.build, key).strip():
            raise WorkspaceError(f"{file}: [build].{key} must not be empty (it would be the workspace root); the default is {getattr(BuildSection, key)!r}")
    if not (math.isfinite(settings.lease.ttl) and settings.lease.ttl > 0):
        raise WorkspaceError(f"{file}: [lease].ttl must be a finite, positive number of seconds, got {settings.lease.ttl}")
    _check_remote(settings.remote, file)
    _check_outputs(settings.outputs, file)
    if settings.fray.backend == "iris" and not settings.fray.controller:
        raise WorkspaceError(f"{file}: [fray].backend = \"iris\" needs [fray].controller{_CONTROLLER_HINT}")
    if not 0 < settings.lease.renew < settings.lease.ttl * 5 / 6:
        raise WorkspaceError(
            f"{file}: [lease].renew ({settings.lease.renew}) must be positive and below 5/6 of [lease].ttl ({settings.lease.ttl}): "
            "a holder stops trusting its lease ttl/6 before others may take it over"
        )


# --- the cache and outputs directories ------------------------------------------------------------


def check_directories(workspace: Workspace) -> None:
    """Refuse a cache or outputs directory mbuild must not delete or replace things in: the
    workspace root or an ancestor of it, one inside the other, a file, or an existing directory
    that holds things and has no mbuild marker. A few stats, no directory walks."""
    root = workspace.root
    where = WORKSPACE_FILE
    build = workspace.settings.build
    dirs = {"cache_dir": Path(os.path.realpath(workspace.cache_dir)), "outputs_dir": Path(os.path.realpath(workspace.outputs_dir))}
    for key, path in dirs.items():
        shown = f"{where}: [build].{key} = {getattr(build, key)!r}"
        if path == root or path in root.parents:
            raise WorkspaceError(f"{shown} is the workspace root or holds it; mbuild deletes and replaces things in that directory, so give it one of its own (the default is {getattr(BuildSection, key)!r})")
        if path.exists() and not path.is_dir():
            raise WorkspaceError(f"{shown} is {path}, which is a file, not a directory")
        if not is_mbuild_dir(path) and _holds_foreign(path, key):
            raise WorkspaceError(
                f"{shown} is {path}, which holds files mbuild did not create (it has no mbuild {MARKER}); "
                "mbuild deletes and replaces things in that directory, so use a new or empty one"
            )
    cache, outputs = dirs["cache_dir"], dirs["outputs_dir"]
    if cache == outputs or cache in outputs.parents or outputs in cache.parents:
        raise WorkspaceError(f"{where}: [build].cache_dir ({cache}) and [build].outputs_dir ({outputs}) must be separate directories, neither inside the other")


def is_mbuild_dir(path: Path) -> bool:
    """Whether `path` is a directory mbuild made (its marker file says so)."""
    try:
        with open(path / MARKER, "rb") as f:
            return f.read(len(_MARKER_HEAD)) == _MARKER_HEAD
    except OSError:
        return False


# An unmarked cache directory holding only this was made by a query of an older mbuild.
_LEGACY_CACHE = frozenset({"buildc"})


def _holds_foreign(path: Path, key: str) -> bool:
    """Whether an unmarked directory holds anything (for a cache, anything but what an older mbuild left)."""
    try:
        with os.scandir(path) as entries:
            names = {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return False
    return bool(names - _LEGACY_CACHE) if key == "cache_dir" else bool(names)


def claim_directory(path: Path, note: str) -> None:
    """Make `path` an mbuild directory (created if missing, with its marker), atomically: other
    builders see no directory or a marked one. Raises OSError (e.g. a full or read-only disk)."""
    if is_mbuild_dir(path):
        return
    path = Path(os.path.realpath(path))  # a link to the directory stays a link
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.parent / f".{path.name}.mbuild-new-{uuid.uuid4().hex[:12]}"
    fresh.mkdir()
    try:
        _write_marker(fresh, note)
        os.rename(fresh, path)  # replaces a missing or empty directory, never one with contents
        return
    except OSError:
        if (fresh / MARKER).exists():
            os.unlink(fresh / MARKER)
        os.rmdir(fresh)
        if not path.is_dir():
            raise
    if not is_mbuild_dir(path):  # it held only what check_directories accepted (an older mbuild's)
        _write_marker(path, note)


def _write_marker(directory: Path, note: str) -> None:
    (directory / MARKER).write_bytes(_MARKER_HEAD + f": {note}\n*\n".encode())


REMOTE_SCHEMES = ("gs", "gcs", "s3", "s3a", "file")  # gcs:// and s3a:// are other names of gs:// and s3://
_CONTROLLER_HINT = ' (the Iris controller\'s address, e.g. "http://host:port")'


def check_remote_url(url: str, where: str) -> None:
    """A remote cache URL must be gs://bucket[/prefix], s3://bucket[/prefix] or file:///absolute/dir;
    WorkspaceError naming `where` (the setting or flag) otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in REMOTE_SCHEMES:
        hint = f" (for a directory: file://{url})" if not sep and os.path.isabs(url) else ""
        raise WorkspaceError(f"{where} must be a gs://, s3:// or file:// URL, got {url!r}{hint}")
    if scheme.lower() == "file":
        path = rest[len("localhost"):] if rest.startswith("localhost/") else rest
        if not path.startswith("/"):
            raise WorkspaceError(f"{where}: a file:// URL needs an absolute path (file:///shared/dir), got {url!r}")
    elif not rest.strip("/"):
        raise WorkspaceError(f"{where}: {url!r} names no bucket")


def check_fray_backend(fray: FraySection, backend: str | None) -> None:
    """`--fray iris` needs a controller address: one error before anything runs."""
    if backend == "iris" and not fray.controller:
        raise WorkspaceError(f"--fray iris needs [fray].controller in {WORKSPACE_FILE}{_CONTROLLER_HINT}")


def _check_remote(remote: RemoteSection, file: str) -> None:
    if remote.url:
        check_remote_url(remote.url, f"{file}: [remote].url")
    if not (remote.timeout > 0 and math.isfinite(remote.timeout)):
        raise WorkspaceError(f"{file}: [remote].timeout must be a positive number of seconds, got {remote.timeout!r}")
    if remote.max_failures < 1:
        raise WorkspaceError(f"{file}: [remote].max_failures must be at least 1, got {remote.max_failures!r}")


def _check_outputs(outputs: OutputsSection, file: str) -> None:
    prefix = outputs.prefix.strip()
    if not prefix:
        return
    scheme, sep, rest = prefix.partition("://")
    if sep and scheme.lower() not in REMOTE_SCHEMES:
        raise WorkspaceError(f"{file}: [outputs].prefix must be a gs://, s3:// or file:// URL or a directory, got {prefix!r}")
    if sep:
        check_remote_url(prefix, f"{file}: [outputs].prefix")


def _build(cls: type, data: dict, file: str, prefix: str):
    """Construct dataclass `cls` from a TOML table, checking keys and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in known:
            kind = "table" if not prefix else "setting"
            shown = f"[{key}]" if not prefix else f"[{prefix}].{key}"
            raise WorkspaceError(f"{file}: unknown {kind} {shown}{did_you_mean(key, known)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise WorkspaceError(f"{file}: [{where}] must be a table, got {type(value).__name__}")
            values[key] = _build(hint, value, file, where)
        else:
            values[key] = _check_type(value, hint, file, prefix, key)
    return cls(**values)


def _check_type(value, hint, file: str, table: str, key: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed_types = tuple(type(None) if a is None else typing.get_origin(a) or a for a in allowed)
    ok = isinstance(value, allowed_types) and not (isinstance(value, bool) and bool not in allowed_types)
    if float in allowed_types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        names = " or ".join("none" if a is type(None) else a.__name__ for a in allowed_types)
        raise WorkspaceError(
            f"{file}: [{table}].{key} must be {names}, got {type(value).__name__} {value!r}"
        )
    return value
