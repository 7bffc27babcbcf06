"""What a build's driver read while it loaded BUILD files and computed keys: every file opened, every
directory listed, every environment variable a BUILD file looked up.

A Python audit hook (installed once per process, active only inside `recording()`) sees each
`open` (BUILD files, the modules they import, rule code, source files being hashed) and each
`os.listdir` / `os.scandir` (glob(), the import system finding modules, distributions on
sys.path). While BUILD files run, `os.environ` is a mapping that remembers the names looked up.
What is not seen: a bare `os.stat` or `os.path.exists`, the clock, the network; BUILD files that
depend on those are not hermetic (BUILD.md says so).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field

_EVENTS = {"open", "os.listdir", "os.scandir"}


@dataclass
class Reads:
    """Paths (absolute) and environment variables read; `ignore`: path prefixes not worth noting
    (the cache, the outputs: checked on their own terms)."""

    ignore: tuple[str, ...] = ()
    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    env: dict[str, str | None] = field(default_factory=dict)

    def note(self, event: str, path: object) -> None:
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its path was noted when it was opened
        try:
            text = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if text.startswith(self.ignore):
            return
        (self.files if event == "open" else self.dirs).add(text)


class _Recorder:
    """The process's one audit hook; it notes into the Reads of the thread that is recording."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.installed = False
        self.lock = threading.Lock()

    def install(self) -> None:
        with self.lock:
            if not self.installed:
                sys.addaudithook(self._hook)
                self.installed = True

    def _hook(self, event: str, args: tuple) -> None:
        if event in _EVENTS:
            reads = getattr(self.local, "reads", None)
            if reads is None:
                return
            if event == "open" and _writes(args):
                return  # what the build writes is not what its answer depends on
            reads.note(event, args[0] if args else ".")


def _writes(args: tuple) -> bool:
    """Whether an `open` audit event (path, mode, flags) opens for writing."""
    mode = args[1] if len(args) > 1 else None
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


_RECORDER = _Recorder()


@contextlib.contextmanager
def recording(reads: Reads) -> Iterator[Reads]:
    """Note into `reads` what this thread opens and lists until the block ends."""
    _RECORDER.install()
    previous = getattr(_RECORDER.local, "reads", None)
    _RECORDER.local.reads = reads
    try:
        yield reads
    finally:
        _RECORDER.local.reads = previous


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
    """Note nothing of what this thread opens until the block ends (inside recording())."""
    previous = getattr(_RECORDER.local, "reads", None)
    _RECORDER.local.reads = None
    try:
        yield
    finally:
        _RECORDER.local.reads = previous


class _RecordingEnviron(MutableMapping):
    """os.environ as BUILD files see it: every name looked up is noted with the value it had."""

    def __init__(self, real: MutableMapping, env: dict[str, str | None]):
        self._real, self._env = real, env

    def __getitem__(self, name: str) -> str:
        try:
            value = self._real[name]
        except KeyError:
            self._env.setdefault(name, None)
            raise
        self._env.setdefault(name, value)
        return value

    def get(self, name, default=None):
        value = self._real.get(name)
        self._env.setdefault(name, value)
        return default if value is None else value

    def __contains__(self, name: object) -> bool:
        found = name in self._real
        if isinstance(name, str):
            self._env.setdefault(name, self._real.get(name))
        return found

    def __setitem__(self, name: str, value: str) -> None:
        self._real[name] = value

    def __delitem__(self, name: str) -> None:
        del self._real[name]

    def __iter__(self):  # a BUILD file that walks the whole environment depends on all of it
        for name in self._real:
            self._env.setdefault(name, self._real.get(name))
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)

    def copy(self) -> dict[str, str]:
        return dict(self._real)


@contextlib.contextmanager
def recording_environ(reads: Reads) -> Iterator[None]:
    """While the block runs (BUILD files are evaluated), note the environment variables they read."""
    real = os.environ
    os.environ = _RecordingEnviron(real, reads.env)  # type: ignore[assignment]
    try:
        yield
    finally:
        os.environ = real
