"""Fingerprints of rule code: the source of a module and of the project modules it imports.

A rule's implementation module goes into its actions' keys by content, together with every
module it imports (transitively, found statically with `ast`) whose source lives under a code
root: the workspace root and the directory holding the rule's own top-level package. Third-party
packages (site-packages) are not followed: the versions of the distributions providing what
those modules import are recorded instead (stdlib modules and mbuild itself are neither).
Enclosing packages' `__init__.py` files are included by content but their imports are not
followed, so one rule module's edit does not rerun its sibling rules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mbuild.digests import digest_bytes, digest_file
from mbuild.keys.dists import Distributions
from mbuild.encoding import encode

_ENGINE_PACKAGE = "mbuild"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"  # "3.12": what the workers run too


@dataclass(frozen=True)
class CodePrint:
    """A rule's code and what runs it: the digest over (module name, source digest) pairs and
    those pairs, the (distribution, version) pairs of the third-party packages those modules
    import, and the Python minor version. `key` digests all of it, once: what action keys hold."""

    digest: str
    modules: tuple[tuple[str, str], ...]
    packages: tuple[tuple[str, str], ...] = ()
    python: str = PYTHON_VERSION
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", digest_bytes(encode([self.digest, self.packages, self.python])))


class CodePrinter:
    """Computes and memoises code fingerprints within one process."""

    def __init__(self, workspace_root: Path, dists: Distributions | None = None):
        self._roots: list[Path] = [workspace_root]
        self._dists = dists or Distributions(None)
        self._files: dict[str, tuple[Path, bool] | None] = {}
        self._parsed: dict[Path, tuple[str, tuple[str, ...]]] = {}
        self._prints: dict[tuple[str, ...], CodePrint] = {}

    def fingerprint(self, modules: Iterable[str]) -> CodePrint:
        seeds = tuple(sorted(set(modules)))
        cached = self._prints.get(seeds)
        if cached is not None:
            return cached
        for name in seeds:
            self._add_root_of(name)
        closure: dict[str, str] = {}
        outside: set[str] = set()  # top-level names imported that are not project modules
        todo = list(seeds)
        while todo:
            name = todo.pop()
            if name in closure:
                continue
            found = self._find(name)
            if found is None:
                outside.add(name.partition(".")[0])
                continue
            path, is_package = found
            file_digest, imports = self._parse(path, name, is_package)
            closure[name] = file_digest
            # Enclosing packages run on import: include their source, but do not follow them.
            parts = name.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent not in closure and (pf := self._find(parent)) is not None:
                    closure[parent] = self._parse(pf[0], parent, True)[0]
            todo.extend(m for m in imports if m not in closure)
        pairs = tuple(sorted(closure.items()))
        result = CodePrint(digest_bytes(encode([list(p) for p in pairs])), pairs, self._packages(outside))
        self._prints[seeds] = result
        return result

    def source_path(self, name: str) -> Path | None:
        """Where module `name`'s source is (None: not a project module, or gone)."""
        found = self._find(name)
        return None if found is None else found[0]

    def _packages(self, tops: set[str]) -> tuple[tuple[str, str], ...]:
        """The installed distributions that provide these import names (third-party ones only)."""
        found: set[tuple[str, str]] = set()
        for top in tops:
            if top != _ENGINE_PACKAGE and top not in sys.stdlib_module_names and self._find(top) is None:
                found.update(self._dists.providing(top))
        return tuple(sorted(found))

    def _add_root_of(self, module: str) -> None:
        """A rule module installed outside the workspace brings its own top-level package as a root."""
        loaded = sys.modules.get(module)
        file = getattr(loaded, "__file__", None)
        if not file:
            return
        path = Path(file).resolve()
        depth = module.count(".") + (1 if path.name == "__init__.py" else 0)
        root = path.parents[depth]
        if root not in self._roots:
            self._roots.append(root)

    def _find(self, name: str) -> tuple[Path, bool] | None:
        if name in self._files:
            return self._files[name]
        found = None
        if name.split(".")[0] != _ENGINE_PACKAGE:
            rel = Path(*name.split("."))
            for root in self._roots:
                if (p := root / rel.with_suffix(".py")).is_file():
                    found = (p, False)
                    break
                if (p := root / rel / "__init__.py").is_file():
                    found = (p, True)
                    break
        self._files[name] = found
        return found

    def _parse(self, path: Path, name: str, is_package: bool) -> tuple[str, tuple[str, ...]]:
        cached = self._parsed.get(path)
        if cached is None:
            file_digest, _ = digest_file(path)
            try:
                tree = ast.parse(path.read_bytes(), str(path))
                imports = tuple(_imports(tree, name, is_package))
            except SyntaxError:
                imports = ()  # the import itself will fail and say why
            cached = self._parsed[path] = (file_digest, imports)
        return cached


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module name an import statement anywhere in `tree` may load."""
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                names.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base:
                names.append(base)
                names.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names
