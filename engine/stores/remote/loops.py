"""The event loop a store's requests run on when its backend has none of its own (file://, sync
fsspec filesystems), the daemon threads their blocking calls run in, and checks on a loop.

Nothing here is ever joined at exit: a call stuck on a hung mount is abandoned with the process,
and the request's deadline has already given up on it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from dataclasses import dataclass


class DaemonThreads(concurrent.futures.Executor):
    """Up to `size` daemon threads for blocking file-system calls on a remote (file://, other sync
    filesystems). Unlike ThreadPoolExecutor's, they are never joined at exit."""

    def __init__(self, size: int, name: str):
        self._size, self._name = size, name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        with self._lock:
            start = self._idle == 0 and self._threads < self._size
            if start:
                self._threads += 1
                self._idle += 1
        if start:
            threading.Thread(target=self._serve, name=f"{self._name}-{self._threads}", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            future, fn, args, kwargs = self._work.get()
            with self._lock:
                self._idle -= 1
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs
            with self._lock:
                self._idle += 1


@dataclass
class IOLoop:
    loop: asyncio.AbstractEventLoop
    threads: DaemonThreads


_loop_lock = threading.Lock()
_own_loop: IOLoop | None = None


def _forget_loop() -> None:  # in a forked child, the loop's thread did not come along
    global _own_loop, _loop_lock
    _own_loop, _loop_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_loop)


def background_loop() -> IOLoop:
    """This process's event loop thread for the non-async backends, and its daemon I/O threads."""
    global _own_loop
    with _loop_lock:
        if _own_loop is None or _own_loop.loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mbuild-remote", daemon=True).start()
            _own_loop = IOLoop(loop, DaemonThreads(16, "mbuild-remote-io"))
        return _own_loop


def answers(loop: asyncio.AbstractEventLoop, timeout: float) -> bool:
    """Does the event loop run a callback within `timeout` seconds (or is something blocking it)?"""
    ran = threading.Event()
    try:
        loop.call_soon_threadsafe(ran.set)
    except RuntimeError:  # closed
        return False
    return ran.wait(timeout)


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
