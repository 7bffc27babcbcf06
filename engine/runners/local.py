"""The local runner: actions run in this machine's pool of worker processes (runners/pool.py),
each as rebuild.run_once.run_action."""

from __future__ import annotations

from typing import Any

from mbuild.action.spec import ActionSpec, ExecConfig
from mbuild.rebuild.run_once import run_action
from mbuild.runners.base import OnDone, OnProgress
from mbuild.runners.pool import Task, WorkerPool


class LocalRunner:
    """A Runner over `jobs` worker processes (started when the first action is submitted)."""

    def __init__(self, jobs: int, on_done: OnDone, on_progress: OnProgress | None = None):
        self.jobs, self.on_done, self.on_progress = jobs, on_done, on_progress
        self.pool: WorkerPool | None = None

    def submit(self, spec: ActionSpec, config: ExecConfig, tag: Any) -> Task:
        if self.pool is None:
            progress = self.on_progress
            self.pool = WorkerPool(
                self.jobs, lambda task, payload, exc: self.on_done(task.tag, payload, exc, "local"),
                (lambda task, record: progress(task.tag, record)) if progress is not None else None,
            )
        return self.pool.submit(run_action, (spec, config), tag)

    def cancel(self, handle: Task) -> None:
        if self.pool is not None:
            self.pool.cancel(handle)

    def close(self, kill: bool = False) -> None:
        if self.pool is not None:
            self.pool.close(kill=kill)
