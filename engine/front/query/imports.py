"""The workspace modules a BUILD file imports, read from its source (for `buildfiles`,
`loadfiles` and `rbuildfiles`); nothing is run."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_files(source: Path, root: Path) -> list[str]:
    """Workspace-relative paths of the modules under `root` that the Python file `source` imports
    directly (`import a.b`, `from a.b import c`, and relative imports inside a package)."""
    tree = ast.parse(source.read_bytes(), str(source))
    package = source.parent.relative_to(root).parts  # what `from . import` means in `source`
    modules: dict[tuple[str, ...], None] = {}

    def add(parts: tuple[str, ...]) -> None:  # importing a.b.c runs a/__init__.py, a/b/__init__.py, then a/b/c.py
        modules.update(dict.fromkeys(parts[:k] for k in range(1, len(parts) + 1)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(tuple(alias.name.split(".")))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base: tuple[str, ...] = ()
            elif node.level - 1 <= len(package):
                base = package[: len(package) - (node.level - 1)]
            else:
                continue
            parts = base + tuple(node.module.split(".")) if node.module else base
            add(parts)
            for alias in node.names:  # `from a import b`: b may be a module of package a
                if alias.name != "*":
                    add(parts + (alias.name,))
    paths = []
    for parts in modules:
        base_path = root.joinpath(*parts)
        for candidate in (base_path.with_name(base_path.name + ".py"), base_path / "__init__.py"):
            if candidate.is_file():
                paths.append(candidate.relative_to(root).as_posix())
                break
    return paths


def import_closure(build_file: Path, root: Path, memo: dict[str, list[str]] | None = None) -> list[str]:
    """Every workspace module `build_file` imports, directly or through other workspace modules,
    in the order they are met (Bazel's `.bzl` files and their `load()`s). `memo` keeps each
    module's direct imports across calls. A BUILD file that does not parse raises SyntaxError."""
    memo = {} if memo is None else memo
    seen: dict[str, None] = {}
    pending = imported_files(build_file, root)
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen[path] = None
        if path not in memo:
            try:
                memo[path] = imported_files(root / path, root)
            except (SyntaxError, ValueError, OSError):
                memo[path] = []  # importing it fails the load, which says why; here it only ends the walk
        pending.extend(memo[path])
    return list(seen)
