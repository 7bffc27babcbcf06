"""A pool of worker processes that run actions, any one of which can be stopped.

Each worker is a long-lived process (started through a fork server, so it inherits no LMDB
handles or threads) in its own process group: stopping an action kills the group, so a shell
command's children go with it. A slot thread per worker forwards tasks and results; the
driver never has a thread per action.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_STOP = None


@dataclass(eq=False)
class Task:
    fn: Callable
    args: tuple
    tag: Any  # the caller's handle (a node index), returned with the result
    cancelled: bool = False
    worker_pid: int | None = field(default=None, repr=False)


class WorkerDied(Exception):
    """The worker process running a task exited (killed, or crashed) before answering."""


class WorkerPool:
    def __init__(self, size: int, on_done: Callable[[Task, Any, BaseException | None], None], preload=("mbuild.execute",)):
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload))
        self._on_done = on_done
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._lock = threading.Lock()
        self._procs: dict[int, Any] = {}  # slot -> Process
        self._threads = [threading.Thread(target=self._slot, args=(i,), daemon=True, name=f"mbuild-slot-{i}") for i in range(size)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable, args: tuple, tag: Any) -> Task:
        task = Task(fn, args, tag)
        self._tasks.put(task)
        return task

    def cancel(self, task: Task) -> None:
        """Stop a task: drop it if queued, kill its worker's process group if running."""
        with self._lock:
            task.cancelled = True
            pid = task.worker_pid
        if pid is not None:
            _killpg(pid)

    def close(self, kill: bool = False) -> None:
        """Stop the workers (after their current task, or at once with kill=True)."""
        for _ in self._threads:
            self._tasks.put(_STOP)
        if kill:
            with self._lock:
                for proc in self._procs.values():
                    _killpg(proc.pid)
        for t in self._threads:
            t.join(timeout=30)

    def _slot(self, slot: int) -> None:
        conn = None
        proc = None
        while True:
            task = self._tasks.get()
            if task is _STOP:
                break
            if task.cancelled:
                self._on_done(task, None, WorkerDied("cancelled before it started"))
                continue
            if proc is None or not proc.is_alive():
                conn, proc = self._spawn(slot)
            with self._lock:
                task.worker_pid = proc.pid
                cancelled = task.cancelled
            if cancelled:
                self._on_done(task, None, WorkerDied("cancelled before it started"))
                continue
            try:
                conn.send((task.fn, task.args))
                status, payload = conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                proc.join(timeout=5)
                code = proc.exitcode
                proc = None
                self._on_done(task, None, WorkerDied(f"worker process exited with code {code}"))
                continue
            finally:
                with self._lock:
                    task.worker_pid = None
            if status == "ok":
                self._on_done(task, payload, None)
            else:
                self._on_done(task, None, RuntimeError(payload))
        if proc is not None and proc.is_alive():
            try:
                conn.send(_STOP)
            except OSError:
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                _killpg(proc.pid)

    def _spawn(self, slot: int):
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True, name=f"mbuild-worker-{slot}")
        proc.start()
        child.close()
        with self._lock:
            self._procs[slot] = proc
        return parent, proc


def _worker_main(conn) -> None:
    os.setpgrp()  # own process group: killing it takes the action's children too
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C stops
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is _STOP:
            return
        fn, args = msg
        try:
            result = fn(*args)
        except BaseException:  # report, don't die: the next task reuses this process
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", result))


def _killpg(pid: int) -> None:
    """Kill a worker and its process group (the worker may not have made its group yet)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
