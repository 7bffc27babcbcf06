"""An action's inputs: staged (source files in place, output trees from the tree cache, checked, and
fetched from the remote cache when missing), and guarded (whatever writes to them is noticed)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild.action.spec import ActionSpec, Input
from mbuild.digests import digest_file
from mbuild.errors import BlobUnavailableError
from mbuild.stores import trees
from mbuild.stores.cas import LocalCAS
from mbuild.stores.localdb import LocalDB

if TYPE_CHECKING:
    from mbuild.stores.remote import RemoteCache


class InputGone(Exception):
    def __init__(self, label: str, reason: str):
        self.label, self.reason = label, reason


def stage_inputs(spec: ActionSpec, cas: LocalCAS, db: LocalDB, remote: RemoteCache | None, root: Path) -> tuple[dict[str, Path | str], int, InputGuard]:
    """(local paths for every input, bytes fetched, the guard that sees whether they changed):
    source files in place, output trees from the tree cache (checked), fetched from the remote
    cache when they are not here. An in-place output is its URL (a str), or its local directory."""
    paths: dict[str, Path | str] = {}
    fetched = 0
    for label, inp in spec.inputs.items():
        if inp.result is None:
            paths[label] = root / inp.relpath
            continue
        if inp.result.place is not None:  # read where it is; the lookup that found it listed it
            url = inp.result.place.url
            paths[label] = url if "://" in url else Path(url)
            continue
        try:
            paths[label], n = trees.ensure_from(inp.result, cas, remote, db)
        except BlobUnavailableError as exc:
            raise InputGone(label, str(exc)) from None
        fetched += n
    return paths, fetched, InputGuard.snapshot(spec, paths)


@dataclass
class _Watched:
    label: str
    path: str
    inp: Input
    before: list[int] | None


class InputGuard:
    """What an action's inputs looked like when it started, to tell afterwards whether it (or anything
    else) wrote to them: one lstat per entry before and after; a changed or racy entry is hashed
    again and compared with the recorded digest, so a byte that differs is always noticed."""

    def __init__(self, watched: list[_Watched], started_ns: int):
        self.watched, self.started_ns = watched, started_ns
        self.damaged: list[_Watched] = []

    @staticmethod
    def snapshot(spec: ActionSpec, paths: dict[str, Path]) -> InputGuard:
        now = time.time_ns()
        watched = []
        for label, inp in spec.inputs.items():
            if inp.result is not None and inp.result.place is not None:
                continue  # in place: not a tree of this cache (its manifest is checked at lookup)
            path = str(paths[label])
            before = trees.stamps(path, inp.result) if inp.result is not None else _file_stamp(path)
            watched.append(_Watched(label, path, inp, before))
        return InputGuard(watched, now)

    def changed(self) -> tuple[str, str, bool] | None:
        """(label, path, is a source file) of the first input whose bytes or entries changed since
        the snapshot."""
        first = None
        for w in self.watched:
            where = self._difference(w)
            if where is not None:
                self.damaged.append(w)
                first = first or (w.label, where, w.inp.result is None)
        return first

    def _difference(self, w: _Watched) -> str | None:
        if w.inp.result is None:  # a source file of the workspace
            now = _file_stamp(w.path)
            if now == w.before and now is not None and not trees.racy(now, self.started_ns):
                return None
            try:
                digest, _ = digest_file(w.path)
            except OSError:
                return w.inp.relpath
            return None if digest == w.inp.digest else w.inp.relpath
        now = trees.stamps(w.path, w.inp.result)
        if now == w.before and now is not None and not trees.racy(now, self.started_ns):
            return None
        rel = trees.first_difference(Path(w.path), w.inp.result)
        return rel

    def drop_damaged(self, cas: LocalCAS) -> None:
        """Move damaged input trees aside and drop corrupt blobs (a shared inode is damaged too), so
        the producer reruns the next time its output is needed."""
        for w in self.damaged:
            if w.inp.result is None:
                continue
            trees.discard(trees.writable_path(cas, w.inp.result.tree))
            for f in w.inp.result.files:
                try:
                    cas.verify(f.digest, f.size)
                except BlobUnavailableError:
                    pass


def _file_stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]
