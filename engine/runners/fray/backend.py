"""What the executor needs of a fray backend, and how one is chosen.

  local       fray's LocalClient: jobs run on threads of this process (local.py).
  iris        a running Iris cluster at a controller address (iris.py).
  iris-local  a whole Iris cluster started in this process, shut down with the backend (iris.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from mbuild.runners.fray.failures import JobFailure
from mbuild.runners.fray.submission import RemoteJob
from mbuild.runners.fray.wire import JobReport

if TYPE_CHECKING:
    from mbuild.action.services import Services


class Backend:
    """One fray client, seen as the executor's poller thread uses it (no method blocks for long)."""

    kind = ""

    def submit(self, job: RemoteJob) -> Any:
        """Submit one run of the job; returns fray's handle (it has `job_id`)."""
        raise NotImplementedError

    def poll(self, jobs: list[RemoteJob]) -> dict[RemoteJob, str]:
        """The state of each job that could be read: "pending", "running", "succeeded", "failed",
        "killed", "worker_failed", "unschedulable" or "missing"."""
        raise NotImplementedError

    def report(self, job: RemoteJob) -> JobReport | None:
        """The report this run of the job left where the driver reads it at once, if any."""
        return None

    def failure(self, job: RemoteJob, state: str, report: JobReport | None) -> JobFailure:
        """What an unsuccessful job means, given its report if it left one here."""
        raise NotImplementedError

    def logs(self, job: RemoteJob) -> list[str]:
        """This run's log lines, as far as they are available now."""
        return []

    def log_path(self, job: RemoteJob) -> str | None:
        """A file already holding the job's log on this machine, if the backend keeps one."""
        return None

    def terminate(self, job: RemoteJob) -> None:
        try:
            job.handle.terminate()
        except Exception:
            pass

    def close(self) -> None:
        """Release the client (an iris-local cluster is shut down)."""


def make_backend(
    kind: str, *, controller: str | None, max_jobs: int, retries: int, local_workers: int | None, wake: threading.Event, services: Services,
) -> Backend:
    """The backend of that kind (imports fray, and Iris for the iris ones)."""
    if kind == "local":
        from mbuild.runners.fray.local import LocalBackend

        return LocalBackend(max_jobs, retries, wake, services)
    from mbuild.runners.fray.iris import IrisBackend

    return IrisBackend(kind, controller, max_jobs, retries, local_workers)
