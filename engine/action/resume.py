"""The working directory of a resumable action: one per action key, kept from a failed attempt to
the next, and handed from one lease holder to the next by rename (the fencing).

    <root>/<key>/e<epoch>-<owner>/   the directory of the attempt holding lease epoch <epoch>
    <root>/.trash-*/                 being removed

`<root>` is `<cache>/resume` for an action run by a local worker, and `{prefix}/.mbuild-work` of a
local-directory in-place prefix for one run as a fray job (work_root): a directory every host of
the cluster reaches when the prefix is on a shared file system.

An attempt, under its lease, takes its key's newest directory (highest epoch) by renaming it to its
own name. From then on the previous holder's path names nothing: a fenced-off attempt that wakes
up cannot open or create a file in the directory its successor uses (only files it already had
open still reach it, until its worker exits). Anything older (a fenced attempt that made its old
path again) is removed. Nothing here is ever a result: only the published record counts, and the
whole `<key>/` is removed once the action's result is published.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mbuild.stores.inplace.store import PlaceConfig, split

RESUME_DIR = "resume"
SHARED_DIR = ".mbuild-work"  # under a local in-place prefix: fray-run actions' working directories
TRASH_PREFIX = ".trash-"
_NAME = re.compile(r"e(\d+)-([0-9a-f]+)")


@dataclass(frozen=True)
class Claimed:
    """The directory an attempt works in, and the epoch whose directory it took over (None: new)."""

    path: Path
    resumed_from: int | None


@dataclass(frozen=True)
class Root:
    """Where an action's working directories go, and why there when it is not where it should be."""

    path: Path
    note: str = ""  # set when a fray-run action's directory is on this host's disk only


def work_root(cache: Path, places: PlaceConfig | None, fray_job: bool) -> Root:
    """`{prefix}/.mbuild-work` of a local in-place prefix for an action run as a fray job (every host
    reaches it if the prefix is on a shared file system); else `<cache>/resume` of the process that
    runs the action. A bucket prefix has no atomic rename to hand a directory over with, so a fray
    job with one works on its host's disk (note says so)."""
    local = cache / RESUME_DIR
    if not fray_job or places is None:
        return Root(local)
    scheme, root = split(places.prefix)
    if scheme:
        return Root(local, f"[outputs] prefix {places.prefix} is a bucket: this working directory is on this host's disk only")
    return Root(Path(root) / SHARED_DIR)


def key_dir(root: Path, key: str) -> Path:
    return root / key


def attempts(root: Path, key: str) -> list[tuple[int, float, Path]]:
    """(epoch, mtime, path) of every attempt's directory for `key`, newest first."""
    try:
        entries = list(os.scandir(key_dir(root, key)))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        m = _NAME.fullmatch(entry.name)
        if m and entry.is_dir(follow_symlinks=False):
            try:
                found.append((int(m.group(1)), entry.stat(follow_symlinks=False).st_mtime, Path(entry.path)))
            except FileNotFoundError:
                continue
    return sorted(found, reverse=True)


def claim(root: Path, key: str, epoch: int, owner: str) -> Claimed:
    """Take `key`'s working directory for the holder of lease (`epoch`, `owner`); call it under the lease.

    The newest earlier directory is renamed to this attempt's name (so it keeps what the last
    attempt wrote); older ones are removed; with none, an empty one is made.
    """
    mine = key_dir(root, key) / f"e{epoch}-{owner}"
    resumed_from = None
    for found_epoch, _, path in attempts(root, key):
        if path == mine:
            return Claimed(mine, resumed_from)  # taken already by this very attempt
        if resumed_from is None:
            try:
                os.rename(path, mine)
            except FileNotFoundError:  # gone meanwhile: only a fenced attempt's cleanup could do that
                continue
            resumed_from = found_epoch
        else:
            _remove(root, path)
    mine.mkdir(parents=True, exist_ok=True)
    return Claimed(mine, resumed_from)


def discard(root: Path, key: str) -> None:
    """Remove every attempt's directory of `key` (after its result is published): out of sight first."""
    if key_dir(root, key).exists():
        _remove(root, key_dir(root, key))


def _remove(root: Path, path: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=root))
    try:
        os.rename(path, trash / "x")
    except FileNotFoundError:
        pass
    shutil.rmtree(trash, ignore_errors=True)
