"""What a running action tells its driver while it runs: `ctx.progress(step, total, **metrics)`,
where its log is (for `-v`), and the phases it went through (for `--profile`).

Reports go to the process's sink (`Services.reports`): a worker process sends them over its
socket to the driver (runners/worker_process.py); an action with no listener (a fray job, a test
calling run_action) drops them. `ctx.progress` is rate-limited here, at the source, so a rule may
call it every step: at most one report per `interval` seconds reaches the driver, plus the first
and the last (`step == total`) one.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

Sink = Callable[[dict[str, Any]], None]

_INTERVAL = 0.2  # seconds between two progress reports of one action


class ProgressError(ValueError):
    """`ctx.progress` was called with something that is not a step count or a metric."""


class Reporter:
    """One action's reports, tagged with its key; `sink` None: nobody listens."""

    def __init__(self, sink: Sink | None, key: str, spans: bool = False, interval: float = _INTERVAL):
        self.sink, self.key, self.spans, self.interval = sink, key, spans, interval
        self._last = -math.inf
        self._lock = threading.Lock()

    def progress(self, step: int | float, total: int | float | None = None, **metrics: Any) -> None:
        """Report `step` of `total` and named metrics (numbers or short strings)."""
        record = {"step": _number(step, "step"), "total": None if total is None else _number(total, "total")}
        record["metrics"] = {name: _metric(name, value) for name, value in metrics.items()}
        if self.sink is None:
            return
        now = time.monotonic()
        last = total is not None and step >= total
        with self._lock:
            if now - self._last < self.interval and not last:
                return
            self._last = now
        self._send(record | {"at": time.time()})

    def started(self, log: str) -> None:
        """The action started and writes its output to `log` (its inode too: the path is the
        worker's and is reused by its next action, which a late reader must not take for this one)."""
        try:
            inode = os.stat(log).st_ino
        except OSError:
            return
        self._send({"log": log, "inode": inode, "at": time.time()})

    def span(self, name: str, start: float, end: float) -> None:
        """A phase of the action (time.time() seconds), sent only when the build is profiled."""
        if self.spans:
            self._send({"span": name, "start": start, "end": end})

    def _send(self, record: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink(record | {"key": self.key})


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProgressError(f"ctx.progress: {what} must be a finite number, got {value!r}")
    return value


def _metric(name: str, value: Any) -> int | float | str | None:
    """A metric as it travels: numbers (non-finite ones as text), short strings; anything else by str()."""
    if hasattr(value, "item") and callable(value.item):  # numpy and jax scalars
        value = value.item()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else str(value)
    return str(value)[:80]
