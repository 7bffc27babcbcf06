"""Read-only inputs: while an action runs in a worker, every input it names is read-only.

A worker that can make a private mount namespace (Linux; root, or unprivileged user namespaces)
enters one before its first action, while it has a single thread. In that namespace the whole tree
cache (`trees/`, where every dependency's output is read) is bind-mounted read-only onto itself,
once per worker; the worker's own writes to it (placing a tree, adopting an output) go through a
descriptor opened before the mount, which still names the writable mount (`/proc/self/fd/N`).
Each source file an action reads is bind-mounted read-only onto itself before the action runs
and stays so for the worker's life (the worker never writes the workspace), up to `KEEP_MOUNTS`
files; past that, a file is mounted for one action and unmounted after it. Writing to an input
then fails at once with EROFS, naming the file, whatever the process's permissions (root ignores
file modes, not read-only mounts); nothing else changes for the action. The mounts never leave
the namespace and vanish with the worker.

Why kept rather than unmounted per action: an unmount waits for an RCU grace period (~0.1-0.4 ms
measured here), which was 40 % of a worker's time on a graph of trivial actions. A source file
replaced by rename in the user's namespace drops the mount there; its new inode is noticed here
and mounted again. Measured: ~0.3 ms once per worker, ~25 us per new source file.

Where no namespace can be made (another OS, no privilege, actions on threads of the driver), the
inputs are not protected, only checked: `action.inputs.InputGuard` notices any change afterwards
(it checks in every case).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mbuild.stores.cas import LocalCAS

_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
# statvfs flags that a bind remount must repeat (the kernel refuses to drop locked ones)
_KEEP = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC))


KEEP_MOUNTS = 20_000  # source files kept mounted per worker (a namespace allows 100,000 mounts)


@dataclass
class _Cover:
    """The tree cache of one cache directory, read-only here, and the descriptor that still writes it."""

    trees: str  # the path, as actions see it
    fd: int  # opened before the mount: /proc/self/fd/<fd> is the writable view
    ident: tuple[int, int]  # (st_dev, st_ino) of the directory when covered


class Sandbox:
    """This worker's mount namespace, or the absence of one (`active` False: nothing is protected)."""

    def __init__(self, active: bool, reason: str = ""):
        self.active = active
        self.reason = reason  # why it is not active
        self._libc = ctypes.CDLL(None, use_errno=True) if active else None
        self._covers: dict[str, _Cover] = {}  # by cache root
        self._kept: dict[str, int] = {}  # source files mounted read-only for the worker's life -> inode

    def cover_trees(self, cas: LocalCAS) -> None:
        """Make `cas`'s tree cache read-only in this namespace, and have `cas` write it through the
        writable alias (again if the directory was replaced since)."""
        if not self.active:
            return
        trees = str(cas.root / "trees")
        cover = self._covers.get(str(cas.root))
        try:
            st = os.stat(trees)
        except FileNotFoundError:
            st = None
        if cover is not None and st is not None and (st.st_dev, st.st_ino) == cover.ident:
            return
        if cover is not None:  # replaced (or removed) since: forget the old one
            self._libc.umount2(trees.encode(), _MNT_DETACH)
            os.close(cover.fd)
            del self._covers[str(cas.root)]
            cas.trees_writable = Path(trees)
        try:
            os.makedirs(trees, exist_ok=True)
            fd = os.open(trees, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return  # unprotected, but still checked afterwards
        try:
            _bind(self._libc, trees, read_only=True)
        except OSError:
            os.close(fd)
            return
        st = os.fstat(fd)
        self._covers[str(cas.root)] = _Cover(trees, fd, (st.st_dev, st.st_ino))
        cas.trees_writable = Path(f"/proc/self/fd/{fd}")

    def _covered(self, path: str) -> bool:
        return any(path.startswith(c.trees + "/") for c in self._covers.values())

    @staticmethod
    def enter() -> Sandbox:
        """Give this (single-threaded) process a private mount namespace."""
        if not sys.platform.startswith("linux") or os.environ.get("MBUILD_NO_SANDBOX"):
            return Sandbox(False, "not available on this system" if not sys.platform.startswith("linux") else "MBUILD_NO_SANDBOX is set")
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _check(libc.unshare(_CLONE_NEWNS), "unshare")
            _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make mounts private")
        except OSError as exc:
            return Sandbox(False, f"cannot make a private mount namespace ({exc.strerror or exc})")
        return Sandbox(True)

    @contextlib.contextmanager
    def read_only(self, paths: Iterable[str]) -> Iterator[None]:
        """Have each path (a directory or a file) read-only for the block's duration: trees under a
        covered tree cache are already; other paths are bind-mounted read-only onto themselves,
        and kept so (see the module docstring)."""
        mounted: list[str] = []  # for this block only
        try:
            if self.active:
                for path in dict.fromkeys(paths):
                    if self._covered(path):
                        continue
                    try:
                        ino = os.stat(path).st_ino
                    except OSError:
                        continue
                    if self._kept.get(path) == ino:
                        continue
                    try:
                        _bind(self._libc, path, read_only=True)
                    except OSError:
                        continue  # unprotected, but still checked afterwards
                    if len(self._kept) < KEEP_MOUNTS or path in self._kept:
                        self._kept[path] = ino
                    else:
                        mounted.append(path)
            yield
        finally:
            for path in reversed(mounted):
                self._libc.umount2(path.encode(), _MNT_DETACH)


def _bind(libc, path: str, *, read_only: bool) -> None:
    p = path.encode()
    _check(libc.mount(p, p, None, _MS_BIND, None), f"bind {path}")
    if read_only:
        flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY
        vfs = os.statvfs(path)
        for st, ms in _KEEP:
            if vfs.f_flag & st:
                flags |= ms
        if libc.mount(None, p, None, flags, None) != 0:
            err = ctypes.get_errno()
            libc.umount2(p, _MNT_DETACH)
            raise OSError(err, f"remount {path} read-only: {os.strerror(err)}")


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _ProcessState:
    """Whether this process is a worker (only workers may enter a namespace) and what it entered."""

    def __init__(self):
        self.worker = False
        self.sandbox = Sandbox(False, "not a worker process")
        self.tried = False


_state = _ProcessState()  # per process by nature: a mount namespace belongs to the process


def mark_worker() -> None:
    """Called by `mbuild.runners.worker_process` at start: this process may enter a namespace for its actions."""
    _state.worker = True


def for_actions() -> Sandbox:
    """The sandbox for this process's actions: entered on a worker's first action (while it still
    has one thread: unshare refuses otherwise), inactive everywhere else."""
    if _state.worker and not _state.tried:
        _state.tried = True
        if threading.active_count() == 1:
            _state.sandbox = Sandbox.enter()
        else:
            _state.sandbox = Sandbox(False, "the worker already had threads")
    return _state.sandbox
