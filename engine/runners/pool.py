"""A pool of worker processes that run actions, any one of which can be stopped.

Each worker is a fresh interpreter (`python -m mbuild.runners.worker_process FD DRIVER_PID`) talking to the
driver over a socket pair, in its own session: stopping an action kills the worker's process
group, so a shell command's children go with it, and Ctrl-C at the terminal reaches only the
driver, which decides what to stop. Workers die with the driver, and a worker's process group
with the worker, even when either is SIGKILLed (Linux; see worker.py). One slot thread per worker
forwards tasks and results; the driver never has a thread per action.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
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

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


_GRACE = 3.0  # seconds a stopped worker gets to release its lease before SIGKILL


class WorkerPool:
    """`on_progress(task, record)`: what a task's action reports while it runs (from a slot thread;
    records carry the `worker` slot that runs it, 1-based)."""

    def __init__(
        self, size: int, on_done: Callable[[Task, Any, BaseException | None], None],
        on_progress: Callable[[Task, dict], None] | None = None,
    ):
        self._on_done = on_done
        self._on_progress = on_progress
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen] = {}
        self._stopping: set[int] = set()  # workers already sent SIGTERM (a second one could cut their clean-up short)
        self._threads = [threading.Thread(target=self._slot, args=(i,), daemon=True, name=f"mbuild-slot-{i}") for i in range(size)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable, args: tuple, tag: Any) -> Task:
        """Queue `fn(*args)` (fn must be importable by name) to run in a worker."""
        task = Task(fn, args, tag)
        self._tasks.put(task)
        return task

    def cancel(self, task: Task) -> None:
        """Stop a task: drop it if queued; if running, SIGTERM its worker's process group (the
        worker releases its lease and exits), and SIGKILL it after a grace period."""
        with self._lock:
            task.cancelled = True
            pid = task.worker_pid
            stopping = pid is not None and pid not in self._stopping
            if stopping:
                self._stopping.add(pid)
        if stopping:
            _stop_group(pid)

    def close(self, kill: bool = False) -> None:
        """Stop the workers (after their current task, or at once with kill=True)."""
        for _ in self._threads:
            self._tasks.put(_STOP)
        if kill:
            with self._lock:
                procs = [p for p in self._procs.values() if p.pid not in self._stopping]
                self._stopping.update(p.pid for p in procs)
            for proc in procs:
                if proc.poll() is None:
                    _stop_group(proc.pid)
        for t in self._threads:
            t.join(timeout=30)

    def _slot(self, slot: int) -> None:
        conn: Connection | None = None
        proc: subprocess.Popen | None = None
        while True:
            task = self._tasks.get()
            if task is _STOP:
                break
            if proc is None or proc.poll() is not None:
                try:
                    conn, proc = self._spawn(slot)
                except OSError as exc:
                    self._on_done(task, None, WorkerDied(f"could not start a worker: {exc}"))
                    continue
            with self._lock:
                cancelled = task.cancelled
                task.worker_pid = None if cancelled else proc.pid
            if cancelled:
                self._on_done(task, None, WorkerDied("cancelled before it started"))
                continue
            try:
                conn.send((task.fn, task.args))
                status, payload = conn.recv()
                while status == "progress":
                    if self._on_progress is not None:
                        self._on_progress(task, payload | {"worker": slot + 1})
                    status, payload = conn.recv()
            except (EOFError, OSError):
                code = proc.wait()
                _killpg(proc.pid)  # whatever the action started dies with its worker
                conn.close()
                proc = None
                self._on_done(task, None, WorkerDied(_describe_exit(code), code))
                continue
            finally:
                with self._lock:
                    task.worker_pid = None
            self._on_done(task, payload, None) if status == "ok" else self._on_done(task, None, RuntimeError(payload))
        if proc is not None:
            # An idle worker holds nothing (no task, no lease): ask it to stop, give it a moment, and
            # move on. It exits by itself, or when this thread ends (PR_SET_PDEATHSIG).
            try:
                conn.send(_STOP)
                proc.wait(timeout=0.5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            conn.close()

    def _spawn(self, slot: int) -> tuple[Connection, subprocess.Popen]:
        parent, child = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mbuild.runners.worker_process", str(child.fileno()), str(os.getpid())],
                pass_fds=[child.fileno()],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        conn = Connection(parent.detach())
        conn.send(list(sys.path))  # the worker imports rule modules exactly as the driver does
        with self._lock:
            self._procs[slot] = proc
        return conn, proc


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"worker process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process was killed by signal {-code}"
    return f"worker process exited with code {code}"


def _stop_group(pid: int) -> None:
    """SIGTERM a worker's process group now and SIGKILL it after the grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    timer = threading.Timer(_GRACE, _killpg, args=(pid,))
    timer.daemon = True
    timer.start()


def _killpg(pid: int) -> None:
    """Kill a worker and everything in its process group."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
