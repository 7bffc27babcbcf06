"""A fray job's ctx.progress, carried back to the driver in the job's own log.

A job in a process of its own (Iris, iris-local) has no channel to its driver but its log, which
the driver can read while the job runs. So the job writes each report as a marker line,
`===== mbuild: progress {...}`, to its own stderr (a copy of the descriptor made before the
action's output is redirected to the action's log), at most one a second plus the last step;
the driver's poller reads the job's log now and then and hands the reports on. Lines are checked
field by field when read: the log is the job's, never trusted as it comes.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import orjson

PROGRESS_LINE = "===== mbuild: progress "  # followed by the report's JSON, to the end of the line
_EVERY = 1.0  # seconds between two progress lines of one job


class ProgressLines:
    """The job side: a Services.reports sink writing marker lines to file descriptor `fd`."""

    def __init__(self, fd: int, every: float = _EVERY):
        self.fd, self.every = fd, every
        self._last = -math.inf
        self._lock = threading.Lock()

    def __call__(self, record: dict[str, Any]) -> None:
        if "span" in record:
            return  # spans are for local workers' rows; a job is traced as the driver sees it
        if "step" in record:
            total = record.get("total")
            last = total is not None and record["step"] >= total
            now = time.monotonic()
            with self._lock:
                if now - self._last < self.every and not last:
                    return
                self._last = now
        line = PROGRESS_LINE.encode() + orjson.dumps(record) + b"\n"
        try:
            os.write(self.fd, line)
        except OSError:
            pass  # the job's log is gone: progress is only a courtesy


def progress_in(lines: list[str], after: float) -> list[dict[str, Any]]:
    """The well-formed reports in a job's log lines stamped later than `after`, in order."""
    found = []
    for line in lines:
        if not line.startswith(PROGRESS_LINE):
            continue
        try:
            record = orjson.loads(line[len(PROGRESS_LINE):])
        except orjson.JSONDecodeError:
            continue
        if _valid(record) and record["at"] > after:
            found.append(record)
    return found


def _valid(record: Any) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("key"), str) or not _number(record.get("at")):
        return False
    if "log" in record:
        return isinstance(record["log"], str) and set(record) == {"key", "at", "log"}
    metrics = record.get("metrics")
    return (
        _number(record.get("step")) and (record.get("total") is None or _number(record.get("total")))
        and isinstance(metrics, dict)
        and all(isinstance(k, str) and (v is None or isinstance(v, (str, bool)) or _number(v)) for k, v in metrics.items())
        and set(record) == {"key", "at", "step", "total", "metrics"}
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
