"""What a build tells the world: a JSON-lines events file for machines, short lines for people."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

# Outcomes of an action, as written to the events file.
RAN = "ran"
CACHE_HIT = "cache_hit"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass
class ActionEvent:
    label: str
    key: str | None
    status: str  # ran | cache_hit | failed | skipped
    seconds: float
    source: str = "local"  # where a hit came from / where the action ran
    log: str | None = None
    error: str | None = None
    because: str | None = None  # for skipped: the failed dependency
    bytes_up: int = 0  # to the remote cache
    bytes_down: int = 0  # from the remote cache
    why: str | None = None  # ran or failed: what differs from its last recorded key

    def record(self) -> dict[str, Any]:
        rec = {"label": self.label, "key": self.key, "status": self.status, "seconds": round(self.seconds, 6), "source": self.source}
        if self.bytes_up or self.bytes_down:
            rec["bytes_up"], rec["bytes_down"] = self.bytes_up, self.bytes_down
        for name in ("log", "error", "because", "why"):
            if (value := getattr(self, name)) is not None:
                rec[name] = value
        return rec


@dataclass
class Summary:
    actions: int = 0
    ran: int = 0
    cache_hits: int = 0
    local_hits: int = 0
    remote_hits: int = 0
    uploads: int = 0  # actions whose results this build uploaded to the remote cache
    bytes_up: int = 0
    bytes_down: int = 0
    remote_requests: int = 0
    failed: int = 0
    skipped: int = 0
    not_started: int = 0
    early_cutoff: int = 0  # cache hits that a dependency's rerun to identical outputs left unchanged
    cutoff_at: list[str] = field(default_factory=list)  # the reruns whose outputs were unchanged
    seconds: float = 0.0
    exit_code: int = 0
    failures: list[dict] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "summary": {
                "actions": self.actions,
                "ran": self.ran,
                "cache_hits": self.cache_hits,
                "local_hits": self.local_hits,
                "remote_hits": self.remote_hits,
                "uploads": self.uploads,
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "remote_requests": self.remote_requests,
                "failed": self.failed,
                "skipped": self.skipped,
                "not_started": self.not_started,
                "early_cutoff": self.early_cutoff,
                "seconds": round(self.seconds, 6),
                "exit_code": self.exit_code,
            }
        }


class EventsFile:
    """One JSON object per line, flushed as written so a killed build still leaves its record."""

    def __init__(self, path: Path | None):
        self._f: IO[bytes] | None = open(path, "wb") if path else None

    @property
    def on(self) -> bool:
        """Whether records are written at all (callers skip building them when not)."""
        return self._f is not None

    def write(self, record: dict[str, Any]) -> None:
        if self._f is not None:
            self._f.write(orjson.dumps(record) + b"\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class Console:
    """Short, readable progress lines on stderr: what runs, what failed, and a summary."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def started(self, label: str, done: int, total: int) -> None:
        self.line(f"[{done}/{total}] running {label}")

    def ran(self, label: str, seconds: float, done: int, total: int) -> None:
        self.line(f"[{done}/{total}] done    {label} ({_secs(seconds)})")

    def failed(self, label: str, error: str, detail: str, log: str | None) -> None:
        self.error(f"FAILED  {label}: {error}")
        if detail:
            for line in detail.rstrip().splitlines():
                self.error(f"  | {line}")
        if log:
            self.error(f"  log: {log}")


def _secs(seconds: float) -> str:
    return f"{seconds:.2f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def quiet_storage_logs() -> None:
    """Storage clients log every retry with a traceback; mbuild reports what failed itself."""
    import logging

    for name in ("gcsfs", "s3fs", "aiobotocore", "botocore", "fsspec", "finelog", "iris", "mbuild.leases", "mbuild.steps.primitives"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class TransferProgress:
    """Progress of large remote-cache transfers on stderr: a line per quarter of each big blob."""

    MIN_BYTES = 64 << 20

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self._shown: dict[str, int] = {}

    def __call__(self, digest: str, done: int, total: int) -> None:
        if total < self.MIN_BYTES:
            return
        quarter = 4 * done // total
        if quarter > self._shown.get(digest, 0) or digest not in self._shown:
            self._shown[digest] = quarter
            print(f"  transferring blob {digest[:12]}: {done >> 20} / {total >> 20} MiB", file=self.stream, flush=True)
