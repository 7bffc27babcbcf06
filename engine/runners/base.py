"""The Runner protocol: what the scheduler needs from anything that runs actions (the local worker
pool, fray). The scheduler never knows which one it holds; it picks one per action (remote-tagged
actions, those asking for resources, go to fray) and hears of each end through `on_done`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mbuild.action.spec import ActionSpec, ExecConfig, Outcome

# on_done(tag, outcome, exc, source): exactly one call per submitted action, from any thread; `exc`
# set when the runner itself failed (a worker died, a job was lost); `source` says where it ran.
OnDone = Callable[[Any, "Outcome | None", "BaseException | None", str], None]
# on_progress(tag, record): what a running action reports (action/progress.py), from any thread,
# before its on_done.
OnProgress = Callable[[Any, dict], None]


class Runner(Protocol):
    """Runs actions somewhere; the scheduler hears of each end through the on_done it gave."""

    def submit(self, spec: ActionSpec, config: ExecConfig, tag: Any) -> Any:
        """Start running `spec`; returns a handle for cancel()."""

    def cancel(self, handle: Any) -> None:
        """Stop the action if it still runs (its on_done still comes)."""

    def close(self, kill: bool = False) -> None:
        """Free the runner's resources; with kill, stop whatever still runs first. The scheduler
        closes a runner once every action it submitted has ended, or when the build stops (then
        actions still running may end without an on_done)."""
