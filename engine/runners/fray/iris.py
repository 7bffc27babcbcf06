"""The Iris fray backends: `iris` (a running cluster at a controller address) and `iris-local` (a
whole cluster started in this process, shut down by close()). Each job is a separate process.

A job's report is read from the cache's logs/ when the job ran on this machine, and from the
job's log otherwise (the executor looks there while it waits for a failed job's log).
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import time
from typing import Any

from mbuild.runners.fray import wire
from mbuild.runners.fray.backend import Backend
from mbuild.runners.fray.clients import open_cluster
from mbuild.runners.fray.failures import LOG_WAIT, JobFailure, classify_iris_failure, one_line, stderr_tail, tidy
from mbuild.runners.fray.job import run_remote_action
from mbuild.runners.fray.submission import RemoteJob, job_request

_JOB_LOG_LINES = 5000  # the last lines of a failed job's log that are fetched and kept
_RPC_GRACE = 120.0  # seconds of failing state RPCs before in-flight jobs are given up
_MESSAGE_WAIT = 1.0  # seconds a failed job's message may trail its state


class IrisBackend(Backend):
    def __init__(self, kind: str, controller: str | None, max_jobs: int, retries: int, local_workers: int | None):
        self.kind = kind
        self.retries = retries
        # each local worker offers 8 CPUs; the autoscaler adds workers as jobs queue up
        workers = local_workers or max(1, min(4, math.ceil(max_jobs / 4)))
        try:
            from fray.types import Entrypoint
            from iris.client.workload_codec import job_state_from_proto
            from iris.cluster.types import JobName
        except ImportError as exc:
            raise RuntimeError(f"fray backend {kind!r} needs the Iris cluster support: install mbuild[cluster] ({exc})") from exc
        self.cluster = open_cluster(kind, controller, workers if kind == "iris-local" else None)
        self.Entrypoint, self.JobName, self.state_from_proto = Entrypoint, JobName, job_state_from_proto
        self.ic, self.fc = self.cluster.iris, self.cluster.fray
        self._cancelled: set[str] = set()
        self._rpc_failing_since: float | None = None

    def submit(self, job: RemoteJob) -> Any:
        payload = pickle.dumps((job.spec, job.config), protocol=pickle.HIGHEST_PROTOCOL)
        entry = self.Entrypoint.from_callable(run_remote_action, args=[payload, list(sys.path), os.getcwd(), job.run_id])
        handle = self.fc.submit(job_request(job, entry, self.retries), adopt_existing=True)
        self._cancelled.discard(handle.job_id)
        return handle

    def poll(self, jobs: list[RemoteJob]) -> dict[RemoteJob, str]:
        names = [self.JobName.from_wire(j.job_id) for j in jobs]
        try:
            raw = self.ic._cluster_client.get_job_states(names)  # one RPC for every job
        except AttributeError:
            raw = None
        except Exception:
            now = time.monotonic()
            self._rpc_failing_since = self._rpc_failing_since or now
            if now - self._rpc_failing_since > _RPC_GRACE:
                return {j: "missing" for j in jobs}
            return {}
        self._rpc_failing_since = None
        out: dict[RemoteJob, str] = {}
        for job in jobs:
            if raw is None:
                try:
                    state = str(job.handle._job.state_only().value)
                except Exception:
                    continue
            else:
                proto = raw.get(job.job_id)
                state = "missing" if proto is None else str(self.state_from_proto(proto).value)
            out[job] = {"unspecified": "pending", "building": "pending"}.get(state, state)
        return out

    def report(self, job: RemoteJob) -> wire.JobReport | None:
        return wire.take(wire.report_path(job.config.cache_dir, job.key), job.run_id)

    def failure(self, job: RemoteJob, state: str, report: wire.JobReport | None) -> JobFailure:
        message = self._message(job, state)
        if report is None:
            return classify_iris_failure(state, message, cancelled_by_us=job.job_id in self._cancelled)
        msg = tidy(message)
        return JobFailure(report.error, msg, report=report, log_wait=LOG_WAIT, last_line=stderr_tail(msg))

    def _message(self, job: RemoteJob, state: str) -> str:
        """Iris's error message for a finished job (it may trail the job's state a little)."""
        message = ""
        deadline = time.monotonic() + _MESSAGE_WAIT
        while state != "missing":
            try:
                message = self.ic.job_status(self.JobName.from_wire(job.job_id)).error_message or ""
            except Exception as exc:
                message = f"(could not read the job's status: {one_line(exc)})"
            if message or state != "failed" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return message

    def logs(self, job: RemoteJob) -> list[str]:
        """This run's lines: a re-run job keeps its earlier runs' lines under the same id."""
        try:
            entries = job.handle._job.logs(max_lines=_JOB_LOG_LINES, tail=True)
        except Exception:
            try:
                return list(job.handle.logs(max_lines=_JOB_LOG_LINES))
            except Exception:
                return []
        marker = wire.RUN_LINE.format(run_id=job.run_id)
        start = [e for e in entries if e.data.rstrip("\n") == marker]
        if start:  # lines stamped no earlier than our run's first line (the worker's clock)
            t0 = min(e.timestamp.epoch_ms() for e in start)
            entries = [e for e in entries if e.timestamp.epoch_ms() >= t0]
        return [e.data.rstrip("\n") for e in entries if e.data.rstrip("\n") != marker]

    def terminate(self, job: RemoteJob) -> None:
        self._cancelled.add(job.job_id)
        super().terminate(job)

    def close(self) -> None:
        self.cluster.close()
