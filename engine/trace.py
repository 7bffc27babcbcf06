"""A build's profile (`--profile trace.json`): Chrome trace events, the format of Bazel's
`--profile`, which Perfetto (ui.perfetto.dev) and chrome://tracing open.

One process (the build), one row (thread id) per place work happens: the driver, each local
worker, each fray job. Spans are complete events (`"ph": "X"`) in microseconds since the build
started; rows are named by `thread_name` metadata events. Times are wall-clock (`time.time()`),
the one clock a worker process and the driver share.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

DRIVER = 0  # the row of the driver's own work (loading, the no-op check, cache lookups, placing outputs)
PID = 1


class Trace:
    """Spans collected in memory while a build runs, written once at its end."""

    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.time()
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._rows: dict[int, str] = {}
        self.row(DRIVER, "mbuild driver")

    def row(self, tid: int, name: str) -> None:
        """Name row `tid` (the first name given sticks)."""
        with self._lock:
            self._rows.setdefault(tid, name)

    def span(self, name: str, cat: str, start: float, end: float, tid: int = DRIVER, args: dict | None = None) -> None:
        """A complete event from `start` to `end` (time.time() seconds) on row `tid`."""
        event = {
            "name": name, "cat": cat, "ph": "X", "pid": PID, "tid": tid,
            "ts": round((start - self.t0) * 1e6, 1), "dur": round(max(0.0, end - start) * 1e6, 1),
        }
        if args:
            event["args"] = args
        with self._lock:
            self._events.append(event)

    def events(self) -> list[dict[str, Any]]:
        """Every event: the row names first, then the spans by start time."""
        with self._lock:
            spans = sorted(self._events, key=lambda e: (e["ts"], -e["dur"]))
            rows = sorted(self._rows.items())
        meta = [{"name": "process_name", "ph": "M", "pid": PID, "tid": DRIVER, "args": {"name": "mbuild build"}}]
        meta += [{"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": name}} for tid, name in rows]
        meta += [{"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid, "args": {"sort_index": tid}} for tid, _ in rows]
        return meta + spans

    def write(self) -> None:
        """Write the trace file (to a temporary name first, so a reader never sees half of it)."""
        body = orjson.dumps({"traceEvents": self.events(), "displayTimeUnit": "ms", "otherData": {"tool": "mbuild", "started": self.t0}})
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, self.path)
