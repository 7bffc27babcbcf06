"""The workspace modules a BUILD file imports, read from its source (for `buildfiles`); nothing is run."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_files(build_file: Path, root: Path) -> list[str]:
    """Workspace-relative paths of the modules under `root` that `build_file` imports directly."""
    tree = ast.parse(build_file.read_bytes(), str(build_file))
    modules: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(dict.fromkeys(alias.name for alias in node.names))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules[node.module] = None
    paths = []
    for module in modules:
        base = root.joinpath(*module.split("."))
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if candidate.is_file():
                paths.append(candidate.relative_to(root).as_posix())
                break
    return paths
