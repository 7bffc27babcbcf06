"""The lines of a rule-code module that changed between two versions of it, for explanations:
`code rules/llm/train.py changed (lines 12–14)`."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from mbuild.digests import digest_bytes

_MAX_RANGES = 8  # changed line ranges named per module


class CodeDiffer:
    """Names the lines of a module that changed between two of its versions: `path_of(module)` is
    where its source is now, `stored(digest)` the bytes of an earlier version (None: not kept)."""

    def __init__(self, root: Path, path_of: Callable[[str], Path | None], stored: Callable[[str], bytes | None]):
        self._root = root
        self._path_of = path_of
        self._stored = stored
        self._said: dict[tuple[str, str, str], str] = {}

    def where(self, module: str) -> str:
        path = self._path_of(module)
        if path is None:
            return module
        try:
            return path.resolve().relative_to(self._root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def describe(self, module: str, before: str, now: str) -> str:
        said = self._said.get((module, before, now))
        if said is None:
            said = self._said[(module, before, now)] = f"code {self.where(module)} changed{self._lines(module, before, now)}"
        return said

    def _source(self, module: str, digest: str) -> bytes | None:
        path = self._path_of(module)
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError:
                data = None
            if data is not None and digest_bytes(data) == digest:
                return data
        return self._stored(digest)

    def _lines(self, module: str, before: str, now: str) -> str:
        old, new = self._source(module, before), self._source(module, now)
        if old is None or new is None:
            return " (its earlier source is not kept)"
        a = old.decode("utf-8", "replace").splitlines()
        b = new.decode("utf-8", "replace").splitlines()
        ranges = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if op == "equal":
                continue
            if j2 > j1:
                ranges.append(f"line {j1 + 1}" if j2 == j1 + 1 else f"lines {j1 + 1}–{j2}")
            else:
                ranges.append(f"removed {i2 - i1} line{'s' if i2 - i1 != 1 else ''} after line {j1}")
        if not ranges:
            return " (line endings or encoding only)"
        more = f" and {len(ranges) - _MAX_RANGES} more" if len(ranges) > _MAX_RANGES else ""
        return f" ({', '.join(ranges[:_MAX_RANGES])}{more})"
