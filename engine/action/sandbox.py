"""Read-only inputs: while an action runs in a worker, every input it names is read-only.

A worker that can make a private mount namespace (Linux; root, or unprivileged user namespaces)
enters one before its first action, while it has a single thread. While an action runs, each of
its inputs (a dependency's output tree, a source file of the workspace) is bind-mounted
read-only onto itself in that namespace. Writing to an input then fails at once with EROFS,
naming the file, whatever the process's permissions (root ignores file modes, not read-only
mounts); nothing else changes for the action. The mounts never leave the namespace and vanish
with the worker. Cost, measured here: ~0.3 ms once per worker, ~40 us per input per action.

Where no namespace can be made (another OS, no privilege, actions on threads of the driver), the
inputs are not protected, only checked: `action.inputs.InputGuard` notices any change afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterable, Iterator

_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
# statvfs flags that a bind remount must repeat (the kernel refuses to drop locked ones)
_KEEP = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC))


class Sandbox:
    """This worker's mount namespace, or the absence of one (`active` False: nothing is protected)."""

    def __init__(self, active: bool, reason: str = ""):
        self.active = active
        self.reason = reason  # why it is not active
        self._libc = ctypes.CDLL(None, use_errno=True) if active else None

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
        """Bind-mount each path (a directory or a file) read-only onto itself for the block's duration."""
        mounted: list[str] = []
        try:
            if self.active:
                for path in dict.fromkeys(paths):
                    try:
                        _bind(self._libc, path, read_only=True)
                    except OSError:
                        continue  # unprotected, but still checked afterwards
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
