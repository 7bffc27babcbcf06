"""The Runner for steps: actions run on threads of the driver (a step is any Python callable, a
closure or a lambda, so it is not shipped to worker processes), at most `max_concurrent` at once.
Steps asking for resources still leave the machine: their callable submits a fray job and waits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mbuild.action.services import Services
from mbuild.action.spec import ActionSpec, ExecConfig
from mbuild.rebuild.run_once import run_action
from mbuild.runners.base import OnDone
from mbuild.steps.spec import StepRun, current_run


class StepThreads:
    """A Runner (runners/base.py) over a thread pool; `prepare(spec)` gives each action its StepRun."""

    def __init__(self, max_concurrent: int, on_done: OnDone, prepare: Callable[[ActionSpec], StepRun], services: Services):
        self.on_done, self.prepare, self.services = on_done, prepare, services
        self.pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="mbuild-step")

    def submit(self, spec: ActionSpec, config: ExecConfig, tag: Any) -> Future:
        run = self.prepare(spec)
        config = dataclasses.replace(config, in_process=True, capture_output=False)  # the console is the user's
        return self.pool.submit(self._run, spec, config, tag, run)

    def _run(self, spec: ActionSpec, config: ExecConfig, tag: Any, run: StepRun) -> None:
        token = current_run.set(run)
        try:
            outcome = run_action(spec, config, self.services)
        except BaseException as exc:  # the runner's own failure (the step's is an outcome)
            self.on_done(tag, None, exc, "local")
            return
        finally:
            current_run.reset(token)
        self.on_done(tag, outcome, None, "local")

    def cancel(self, handle: Future) -> None:
        handle.cancel()  # a step already running finishes (threads cannot be stopped)

    def close(self, kill: bool = False) -> None:
        self.pool.shutdown(wait=not kill, cancel_futures=kill)
