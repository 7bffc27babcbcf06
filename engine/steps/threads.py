"""The Runner for steps: actions run on threads of the driver (a step is any Python callable, a
closure or a lambda, so it is not shipped to worker processes), at most `max_concurrent` at once.
Steps asking for resources still leave the machine: their callable submits a fray job and waits."""

from __future__ import annotations

import ctypes
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mbuild.action.services import Services
from mbuild.action.spec import ActionSpec, ExecConfig
from mbuild.errors import StopRequested
from mbuild.rebuild.run_once import run_action
from mbuild.runners.base import OnDone
from mbuild.steps.spec import StepRun, current_run


class _Stopper:
    """Stops one step's thread on request (Ctrl-C): raises StopRequested in it asynchronously, at
    its next Python instruction, but only while the step runs (disarmed once it returned)."""

    def __init__(self) -> None:
        self.tid = threading.get_ident()
        self.mu = threading.Lock()
        self.armed = True

    def stop(self) -> None:
        with self.mu:
            if self.armed:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.tid), ctypes.py_object(StopRequested))
                self.armed = False

    def disarm(self) -> None:
        with self.mu:
            if not self.armed:  # sent: clear it if it was not delivered yet
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.tid), None)
            self.armed = False


class StepThreads:
    """A Runner (runners/base.py) over a thread pool; `prepare(spec)` gives each action its StepRun."""

    def __init__(self, max_concurrent: int, on_done: OnDone, prepare: Callable[[ActionSpec], StepRun], services: Services):
        self.on_done, self.prepare, self.services = on_done, prepare, services
        self.pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="mbuild-step")
        self.stoppers: dict[int, _Stopper] = {}  # running steps, by thread
        self.mu = threading.Lock()

    def submit(self, spec: ActionSpec, config: ExecConfig, tag: Any) -> Future:
        run = self.prepare(spec)
        config = dataclasses.replace(config, in_process=True, capture_output=False)  # the console is the user's
        return self.pool.submit(self._run, spec, config, tag, run)

    def _run(self, spec: ActionSpec, config: ExecConfig, tag: Any, run: StepRun) -> None:
        token = current_run.set(run)
        stopper = _Stopper()
        with self.mu:
            self.stoppers[stopper.tid] = stopper
        try:
            try:
                outcome = run_action(spec, config, self.services)
            finally:
                stopper.disarm()
                with self.mu:
                    self.stoppers.pop(stopper.tid, None)
        except BaseException as exc:  # the runner's own failure, or a stop (the step's own failure is an outcome)
            self.on_done(tag, None, exc, "local")
            return
        finally:
            current_run.reset(token)
        self.on_done(tag, outcome, None, "local")

    def cancel(self, handle: Future) -> None:
        handle.cancel()  # a step already running finishes (threads cannot be stopped)

    def close(self, kill: bool = False) -> None:
        """With `kill` (Ctrl-C), running steps are stopped: StopRequested in their threads unwinds
        them, releasing their leases; nothing of theirs is published."""
        if kill:
            with self.mu:
                for stopper in list(self.stoppers.values()):
                    stopper.stop()
        self.pool.shutdown(wait=True, cancel_futures=kill)
