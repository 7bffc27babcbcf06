"""A job's logs, as the driver keeps and shows them: the action's own log (when the job ran on
this machine), the job's log saved as <cache>/logs/<key>.job.log, and a failed action's Failed
made from them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mbuild.action.spec import Failed
from mbuild.runners.fray.backend import Backend
from mbuild.runners.fray.failures import JobFailure
from mbuild.runners.fray.job_progress import PROGRESS_LINE
from mbuild.runners.fray.submission import RemoteJob
from mbuild.runners.fray.wire import REPORT_LINE, between_markers

_LOG_TAIL_LINES = 30


def failed_outcome(backend: Backend, job: RemoteJob, failure: JobFailure, lines: list[str]) -> Failed:
    """The Failed of a job: the action's error, the tail of its log (echoed in the job's log), a log file."""
    kept = backend.log_path(job)  # LocalClient: the thread's output, already a file here
    saved = None if kept else save_job_log(job, lines)
    body = between_markers(lines)
    shown = [line for line in (body if body is not None else lines) if not line.startswith((REPORT_LINE, PROGRESS_LINE))]
    detail = "\n".join(shown[-_LOG_TAIL_LINES:])
    report = failure.report
    fallback_detail, fallback_log = (report.detail, report.log) if report is not None else (failure.reason, "")
    return Failed(failure.error, detail or fallback_detail, kept or local_log(job) or saved or fallback_log)


def local_log(job: RemoteJob) -> str | None:
    """The action's own log (<cache>/logs/<key>.log) if this run wrote one on this machine."""
    path = Path(job.config.cache_dir) / "logs" / f"{job.key}.log"
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path) if st.st_size > 0 and st.st_mtime >= job.submitted_at - 2 else None


def success_log(backend: Backend, job: RemoteJob) -> str:
    """The log a successful job's Ran names: the action's own, else the job's."""
    return local_log(job) or backend.log_path(job) or ""


def save_job_log(job: RemoteJob, lines: list[str]) -> str | None:
    """Keep a job's log lines as <cache>/logs/<key>.job.log; None if there are none (or no room)."""
    if not lines:
        return None
    path = Path(job.config.cache_dir) / "logs" / f"{job.key}.job.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="replace")
        os.replace(tmp, path)
    except OSError:
        return None
    return str(path)
