"""What an unsuccessful fray job means, when its own report does not say: lost to the
infrastructure (submit it again), stopped after losing its lease, or failed.

A job that ran its action leaves a JobReport (wire.py), and the report decides. This module
judges the jobs that did not leave one: a task killed by a signal, a worker that died, a job
killed by somebody else, a job the controller forgot, and a job that could not start at all.
It uses only Iris's state, the exit status and Iris's message.
"""

from __future__ import annotations

import dataclasses
import re
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mbuild.leases import LEASE_LOST_EXIT_CODE

if TYPE_CHECKING:
    from mbuild.runners.fray.wire import JobReport

LOG_WAIT = 3.0  # seconds to wait for a failed Iris job's last log lines to arrive

_SIGNAL_EXIT = re.compile(r"Exit code:? (-\d+)\b|Exit code (1[3-9]\d|2[0-5]\d): killed by")
_LEASE_LOST = re.compile(rf"Exit code:? {LEASE_LOST_EXIT_CODE}\b")
_RETRY_PREAMBLE = re.compile(r"^Cumulative failed task attempts exceeded max_task_failures: failures=\d+, limit=\d+; ")
_RUN_LINE_TAIL = re.compile(r"\. stderr: ===== mbuild: job run [0-9a-f]+ =====$")


@dataclass(frozen=True)
class JobFailure:
    """What is known about a job that did not succeed, and how to go on with it."""

    error: str  # one line, for the user
    reason: str = ""  # the backend's own words (state, exit code, message)
    lost: bool = False  # lost to the infrastructure: submit it again
    fenced: bool = False  # it stopped itself after losing the action's lease (exit status 75)
    report: JobReport | None = None  # what the job said about its action, once known
    log_wait: float = 0.0  # how long to wait for the job's log to be complete
    last_line: str | None = None  # the log is complete once this line has arrived

    def log_complete(self, lines: list[str]) -> bool:
        """Whether the job's log has all it will get: its last line, or the job's report, is in."""
        if not lines:
            return False
        if self.last_line:
            return any(self.last_line in line for line in lines)
        return True

    def reported(self, report: JobReport) -> JobFailure:
        """This failure once the job's report is known: the action's own error line."""
        error = report.error if report.kind == "failed" and report.error else self.error
        return dataclasses.replace(self, report=report, error=error)


def classify_iris_failure(state: str, message: str, cancelled_by_us: bool = False) -> JobFailure:
    """What a finished, unsuccessful Iris job means, from its state and message (a pure function).

    - WORKER_FAILED, KILLED by somebody else, a task killed by a signal (not an OOM verdict),
      or a job that vanished from the controller: lost, submitted again;
    - exit status LEASE_LOST_EXIT_CODE: the job lost the action's lease and stopped (fenced);
    - UNSCHEDULABLE and anything else (e.g. the job could not even import mbuild): failed. The
      driver then waits a little for the job's log, where the job's report may still arrive.
    """
    msg = tidy(message or "")
    last = stderr_tail(msg)
    if _LEASE_LOST.search(msg):
        return JobFailure("the job lost the action's lease", msg, fenced=True)
    if state == "missing":
        return JobFailure("the job vanished from the Iris controller", "job not found on the controller", lost=True)
    if state == "worker_failed":
        return JobFailure("the job's worker failed", f"WORKER_FAILED: {msg}", lost=True)
    if state == "killed":
        if cancelled_by_us:
            return JobFailure("the job was cancelled", f"KILLED: {msg}")
        return JobFailure("the job was killed", f"KILLED (not by this build): {msg}", lost=True)
    if state == "unschedulable":
        return JobFailure(f"the job cannot be scheduled: {msg}", f"UNSCHEDULABLE: {msg}")
    if _SIGNAL_EXIT.search(msg) and "OOM killed" not in msg:
        return JobFailure("the job's task was killed", f"task killed: {msg}", lost=True)
    return JobFailure(f"fray job failed: {last or msg or state}", msg, log_wait=LOG_WAIT, last_line=last)


def tidy(message: str) -> str:
    """Iris's failure message without the retry-budget preamble and without our run marker."""
    return _RUN_LINE_TAIL.sub("", _RETRY_PREAMBLE.sub("", message.strip()))


def stderr_tail(message: str) -> str | None:
    """The last stderr line an Iris failure message quotes (the job's log ends with it), if any."""
    return message.rsplit("stderr: ", 1)[-1].strip() if "stderr: " in message else None


def one_line(exc: BaseException | None) -> str:
    """`Type: first line of the message`, for errors shown on one line."""
    if exc is None:
        return "unknown error"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def detail_of(exc: BaseException | None) -> str:
    """The exception's traceback, for a failure's detail."""
    return "".join(traceback.format_exception(exc)).rstrip() if exc is not None else ""
