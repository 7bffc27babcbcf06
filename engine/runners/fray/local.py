"""The `local` fray backend: fray's LocalClient, each job a thread of this process, using the
driver's open stores (Services).

The job hands its report over in process (no file, no bytes). Its Python-level output goes to
<cache>/logs/<key>.job.log, which is also the log of a failed action.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from mbuild.action.services import Services
from mbuild.runners.fray.backend import Backend
from mbuild.runners.fray.clients import local_client
from mbuild.runners.fray.failures import JobFailure, detail_of, one_line
from mbuild.runners.fray.job import run_action_in_process
from mbuild.runners.fray.submission import RemoteJob, job_request
from mbuild.runners.fray.wire import JobReport

class LocalBackend(Backend):
    kind = "local"

    def __init__(self, max_jobs: int, retries: int, wake: threading.Event, services: Services):
        from fray.types import Entrypoint, JobStatus

        self.client = local_client(max_jobs)
        self.retries = retries
        self.wake = wake
        self.services = services
        self.Entrypoint = Entrypoint
        self.states = {JobStatus.SUCCEEDED: "succeeded", JobStatus.FAILED: "failed", JobStatus.STOPPED: "killed"}
        self.replies: dict[str, list[JobReport]] = {}  # run id -> what the job handed back
        _quiet_local_backend()

    def submit(self, job: RemoteJob) -> Any:
        reply = self.replies[job.run_id] = []
        args = [job.spec, job.config, self.services, str(self._log_file(job)), job.run_id, reply]
        entry = self.Entrypoint.from_callable(run_action_in_process, args=args)
        handle = self.client.submit(job_request(job, entry, self.retries))
        future = getattr(handle, "_future", None)
        if future is not None:  # wake the poller at once instead of at its next tick
            wake = self.wake
            future.add_done_callback(lambda _f: wake.set())
        return handle

    def poll(self, jobs: list[RemoteJob]) -> dict[RemoteJob, str]:
        return {job: self.states.get(job.handle.status(), "running") for job in jobs}

    def report(self, job: RemoteJob) -> JobReport | None:
        reply = self.replies.pop(job.run_id, None)
        return reply[-1] if reply else None

    def failure(self, job: RemoteJob, state: str, report: JobReport | None) -> JobFailure:
        if report is not None:
            return JobFailure(report.error, report.error, report=report)
        try:
            job.handle.wait(timeout=0, raise_on_failure=True)
        except BaseException as exc:  # the job failed before its action could report (e.g. an import)
            return JobFailure(f"fray job failed: {one_line(exc)}", detail_of(exc))
        return JobFailure(f"fray job ended {state}", state)

    def _log_file(self, job: RemoteJob) -> Path:
        return Path(job.config.cache_dir) / "logs" / f"{job.key}.job.log"

    def logs(self, job: RemoteJob) -> list[str]:
        try:
            return self._log_file(job).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def log_path(self, job: RemoteJob) -> str | None:
        path = self._log_file(job)
        try:
            if path.stat().st_size > 0:
                return str(path)
        except OSError:
            pass
        return None

    def terminate(self, job: RemoteJob) -> None:
        self.replies.pop(job.run_id, None)
        super().terminate(job)

    def close(self) -> None:
        self.client.shutdown(wait=False)


class _OurJobFailures(logging.Filter):
    """Drop fray LocalClient's own warning + traceback for our failed jobs: mbuild reports them."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = " ".join(str(a) for a in record.args) if isinstance(record.args, tuple) else str(record.args)
        return not ("run_action_in_process" in text or "local-mbuild-" in text)


def _quiet_local_backend() -> None:
    log = logging.getLogger("fray.local_backend")
    if not any(isinstance(f, _OurJobFailures) for f in log.filters):
        log.addFilter(_OurJobFailures())
