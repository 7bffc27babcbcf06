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


def progress_record(label: str, key: str | None, report: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """The events-file line of a running action's ctx.progress report (status "progress")."""
    return {
        "label": label, "key": key, "status": "progress", "step": report.get("step"), "total": report.get("total"),
        "metrics": report.get("metrics") or {}, "seconds": round(elapsed, 3),
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
    """Short, readable progress lines on stderr: what runs, what failed, and a summary.

    This is the plain console (a pipe, a file, `--quiet`); front/live.py draws the same on a
    terminal. A running action's ctx.progress is a line when it first reports and then at most
    every PROGRESS_EVERY seconds. `transcript`, when a list, keeps every line printed (the
    summary that `mbuild log --last` replays).
    """

    PROGRESS_EVERY = 10.0

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.start = time.monotonic()
        self.transcript: list[str] | None = None
        self.follower: Any = None  # -v: follows running actions' logs (front/live.py LogFollower)
        self._progress_shown: dict[str, float] = {}
        self._expected: dict[str, float] = {}
        self._done, self._total = 0, 0

    def _keep(self, text: str) -> None:
        if self.transcript is not None:
            self.transcript.append(text)

    def line(self, text: str) -> None:
        if not self.quiet:
            self._keep(text)
            print(text, file=self.stream, flush=True)

    def error(self, text: str) -> None:
        self._keep(text)
        print(text, file=self.stream, flush=True)

    def out(self, text: str) -> None:
        """A line of the command's result (stdout), e.g. where outputs are."""
        self._keep(text)
        print(text, flush=True)

    def started(self, label: str, done: int, total: int, expected: float | None = None) -> None:
        if expected is not None:
            self._expected[label] = expected
        self._done, self._total = done, total
        self.line(f"[{done}/{total}] running {label}" + (f" (took {_secs(expected)} last time)" if expected is not None else ""))

    def progress(self, label: str, report: dict[str, Any], elapsed: float) -> None:
        """A running action's ctx.progress report, `elapsed` seconds after it started."""
        now = time.monotonic()
        if now - self._progress_shown.get(label, -self.PROGRESS_EVERY) < self.PROGRESS_EVERY and not _last_step(report):
            return
        self._progress_shown[label] = now
        eta = estimate(elapsed, report, self._expected.get(label))
        when = _secs(elapsed) + (f", ETA {_secs(eta)}" if eta is not None else "")
        self.line(f"[{self._done}/{self._total}] {label}: {describe_progress(report)} ({when})")

    def follow(self, label: str, log: str, inode: int | None = None) -> None:
        """A running action writes its output to `log` (shown with -v); `inode`: the file's, when it started."""
        if self.follower is not None:
            self.follower.add(label, log, inode)

    def ended(self, label: str, log: str | None = None) -> None:
        """A running action ended (its outcome is reported next); `log`: where its log was kept."""
        self._progress_shown.pop(label, None)
        self._expected.pop(label, None)
        if self.follower is not None:
            self.follower.remove(label, log)

    def settled(self, hit: bool, done: int, total: int) -> None:
        """A target reached its final state."""
        self._done, self._total = done, total

    def close(self) -> None:
        """The build is over: stop anything live (before the summary is printed)."""
        if self.follower is not None:
            self.follower.close()

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


def clock(seconds: float) -> str:
    """A running time as people read it on a live display: 7s, 1m05s, 2h03m."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def describe_progress(report: dict[str, Any]) -> str:
    """`step 120/1000 loss=3.21 tokens_per_s=4.1k`: a ctx.progress report in one short line."""
    step, total = report.get("step"), report.get("total")
    text = f"step {_num(step)}" + (f"/{_num(total)}" if total is not None else "")
    for name, value in (report.get("metrics") or {}).items():
        text += f" {name}={_num(value)}"
    return text


def _num(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value / 1000:.1f}k" if abs(value) < 1e7 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value / 1000:.1f}k" if abs(value) < 10_000_000 else f"{value:.3g}"
    return str(value)


def _last_step(report: dict[str, Any]) -> bool:
    total = report.get("total")
    return total is not None and report.get("step", 0) >= total


def estimate(elapsed: float, report: dict[str, Any] | None, expected: float | None) -> float | None:
    """Seconds left: from the rate of its steps so far when it reports a total, else from how long
    its last recorded run took; None when neither says."""
    if report is not None:
        step, total = report.get("step"), report.get("total")
        if isinstance(step, (int, float)) and isinstance(total, (int, float)) and 0 < step <= total and elapsed > 0:
            return elapsed / step * (total - step)
    if expected is not None:
        return max(0.0, expected - elapsed)
    return None


def quiet_storage_logs() -> None:
    """Storage clients log every retry with a traceback; mbuild reports what failed itself."""
    import logging

    for name in ("gcsfs", "s3fs", "aiobotocore", "botocore", "fsspec", "finelog", "iris", "mbuild.leases", "mbuild.steps.primitives"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class TransferProgress:
    """Progress of large remote-cache transfers on stderr: a line per quarter of each big blob."""

    MIN_BYTES = 64 << 20

    def __init__(self, stream: IO[str] | None = None, say: Any = None):
        """`say(text)`: where the lines go instead of `stream` (the build's console, which may be live)."""
        self.stream = stream or sys.stderr
        self.say = say
        self._shown: dict[str, int] = {}

    def __call__(self, digest: str, done: int, total: int) -> None:
        if total < self.MIN_BYTES:
            return
        quarter = 4 * done // total
        if quarter > self._shown.get(digest, 0) or digest not in self._shown:
            self._shown[digest] = quarter
            text = f"  transferring blob {digest[:12]}: {done >> 20} / {total >> 20} MiB"
            if self.say is not None:
                self.say(text)
            else:
                print(text, file=self.stream, flush=True)
