"""The tree cache: each action's output tree, whole, at `trees/<tree digest>/`.

A finished action's output directory is renamed here (its files are hard links shared with the
CAS), so dependents read their inputs in place instead of copying or linking them per action.

Nothing here is trusted blindly. Every use checks the tree against what was recorded:
- the first time (or whenever anything about it changed) by hashing every file and listing every
  directory against the result's manifest;
- after that, by one `lstat` per entry (the root, every directory, file and link), compared with
  the inode, size, mtime, ctime and mode recorded when the hash last matched (the local database's
  `treestat` table). Any write, truncation, chmod, rename or new entry changes at least the ctime
  of the entry or of its directory, and a ctime cannot be set back. Stamps are recorded only for
  entries whose ctime is older than the racy window, so a change within one clock tick of the
  recorded state is never missed (the next check hashes again).
A tree that fails is moved aside and rebuilt from the CAS (whose blobs are verified in turn); a
missing or corrupt blob surfaces as BlobUnavailableError, and the action reruns.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from mbuild.digests import digest_file
from mbuild.errors import BlobUnavailableError
from mbuild.stores.results import ActionResult
from mbuild.stores.cas import LocalCAS

if TYPE_CHECKING:
    from mbuild.stores.localdb import LocalDB
    from mbuild.stores.remote import RemoteCache

# Entries changed this recently are hashed again rather than trusted by their stamp: a file system's
# timestamps may be as coarse as a clock tick (or 2 s on some), so a same-tick change is invisible.
# (MBUILD_RACY_WINDOW_MS changes it: tests set 0 to exercise the stamp path without waiting.)
RACY_NS = int(float(os.environ.get("MBUILD_RACY_WINDOW_MS", "2000")) * 1_000_000)
_FIELDS = 5  # per entry: inode, size, mtime_ns, ctime_ns, mode


def tree_path(cas: LocalCAS, tree: str) -> Path:
    """Where the tree is read (and where actions are shown it)."""
    return cas.root / "trees" / tree


def writable_path(cas: LocalCAS, tree: str) -> Path:
    """The same tree, as this process writes it (differs from `tree_path` only in a sandboxed worker)."""
    return cas.trees_writable / tree


def adopt(out: Path, result: ActionResult, cas: LocalCAS) -> None:
    """Move a finished output directory into the cache as the tree of `result` (if not there yet).

    If a tree is there already it is left alone: it is checked like any other on its next use."""
    dest = writable_path(cas, result.tree)
    try:
        os.rename(out, dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(out, dest)
        except OSError:
            pass
    except OSError:
        pass  # the same tree exists already (an identical rebuild, or another builder)


def ensure(result: ActionResult, cas: LocalCAS, db: LocalDB | None = None, on_damage: Callable[[str], None] | None = None) -> Path:
    """The checked tree of `result`, rebuilt from the CAS if missing or damaged (`on_damage` hears
    which entry differed, when a tree was there but wrong)."""
    dest = tree_path(cas, result.tree)
    if check(dest, result, db):
        return dest
    if on_damage is not None and os.path.lexists(dest):
        on_damage(first_difference(dest, result) or ".")

    into = writable_path(cas, result.tree)
    tmp = into.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        materialize_tree(result, cas, tmp)
        try:
            os.rename(tmp, into)
        except OSError:
            if not check(dest, result, db):  # damaged: swap the good copy in
                discard(into)
                os.rename(tmp, into)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def check(path: Path, result: ActionResult, db: LocalDB | None) -> bool:
    """Whether `path` holds exactly the tree of `result`: by recorded stamps when they still match,
    else by hashing (and then the stamps are recorded for next time, unless racy)."""
    root = str(path)
    before = stamps(root, result)
    if before is None:
        return False
    if db is not None and db.tree_stamps(result.tree) == before:
        return True
    if first_difference(path, result) is not None:
        return False
    if db is not None and stamps(root, result) == before and not racy(before):
        db.put_tree_stamps(result.tree, before)
    return True


def stamps(root: str, result: ActionResult) -> list[int] | None:
    """One lstat per entry of the tree, flattened (None if any entry is missing)."""
    return entry_stamps(root, _entries(result))


def racy(stamps: list[int], now_ns: int | None = None) -> bool:
    """Whether any entry changed within the racy window (its stamp cannot vouch for its bytes)."""
    limit = (now_ns if now_ns is not None else time.time_ns()) - RACY_NS
    return any(ctime > limit for ctime in stamps[3::_FIELDS])


def changed_entry(root: str, result: ActionResult, before: list[int]) -> str | None:
    """The first entry (relative path, "." for the root) whose stamp differs from `before`."""
    for i, rel in enumerate(_entries(result)):
        try:
            st = os.lstat(f"{root}/{rel}" if rel else root)
        except OSError:
            return rel or "."
        if [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode] != before[i * _FIELDS : (i + 1) * _FIELDS]:
            return rel or "."
    return None


def discard(path: Path) -> None:
    """Move a damaged tree out of the way at once (a rename), then delete it."""
    bad = path.parent / f".bad-{uuid.uuid4().hex}"
    try:
        os.rename(path, bad)
    except FileNotFoundError:
        return
    _make_writable(bad)
    shutil.rmtree(bad, ignore_errors=True)


def verify(path: Path, result: ActionResult) -> bool:
    """Whether the directory holds exactly the result's files (by digest), links and directories."""
    return first_difference(path, result) is None


def first_difference(path: Path, result: ActionResult) -> str | None:
    """The first path (relative; "." for the root) where the directory differs from the result's
    manifest: a file whose bytes or size differ, a missing or extra entry, a changed link."""
    expected = {f.path: f for f in result.files}
    links = {link.path: link.target for link in result.links}
    dirs = set(result.dirs)
    root = str(path)
    if not os.path.isdir(root) or os.path.islink(root):
        return "."
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                dirnames.remove(d)
                filenames.append(d)
            elif prefix + d not in dirs:
                return prefix + d
        for name in filenames:
            rel_path = prefix + name
            full = os.path.join(dirpath, name)
            if rel_path in links:
                if not os.path.islink(full) or os.readlink(full) != links.pop(rel_path):
                    return rel_path
                continue
            f = expected.pop(rel_path, None)
            if f is None or os.path.islink(full):
                return rel_path
            try:
                digest, size = digest_file(full)
            except OSError:
                return rel_path
            if digest != f.digest or size != f.size:
                return rel_path
    missing = sorted(expected) + sorted(links)
    return missing[0] if missing else None


def _entries(result: ActionResult):
    yield ""
    yield from result.dirs
    for f in result.files:
        yield f.path
    for link in result.links:
        yield link.path


def entries(result: ActionResult) -> list[str]:
    """The tree's entries, in the order of its stamps ("" is the root)."""
    return list(_entries(result))


def entry_stamps(root: str, names: Iterable[str]) -> list[int] | None:
    """stamps() for a list of entries (as entries() gave them)."""
    out: list[int] = []
    try:
        for rel in names:
            st = os.lstat(f"{root}/{rel}" if rel else root)
            out += (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
    except OSError:
        return None
    return out


def _make_writable(root: Path) -> None:
    """Directories of a discarded tree may have been made read-only by the action; rmtree needs +w."""
    for dirpath, _, _ in os.walk(root):
        try:
            os.chmod(dirpath, 0o755)
        except OSError:
            pass


__all__ = ["BlobUnavailableError", "adopt", "check", "discard", "ensure", "first_difference", "racy", "stamps", "tree_path", "verify", "writable_path"]


def materialize_tree(result: ActionResult, cas: LocalCAS, dest: Path) -> None:
    """Build `dest` as the output tree of `result`, every blob verified against its digest."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in result.dirs:
        (dest / d).mkdir(parents=True, exist_ok=True)
    for f in result.files:
        target = dest / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        cas.link_to(f.digest, f.size, target, f.executable)
    for link in result.links:
        target = dest / link.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link.target, target)


def ensure_from(
    result: ActionResult, cas: LocalCAS, remote: RemoteCache | None, db: LocalDB | None = None, on_damage: Callable[[str], None] | None = None
) -> tuple[Path, int]:
    """(the checked local tree of `result`, bytes fetched): blobs missing or corrupt locally come
    from the remote cache (verified before use); BlobUnavailableError if neither has them."""
    try:
        return ensure(result, cas, db, on_damage), 0
    except BlobUnavailableError:
        if remote is None:
            raise
    fetched = remote.fetch_blobs(cas, [(f.digest, f.size) for f in result.files if not cas.has(f.digest)])
    return ensure(result, cas, db), fetched
