"""Remote execution through fray, seen from the driver: FrayExecutor runs remote-tagged actions as
fray jobs and reports each one's outcome (a Runner, see runners/base.py).

The job does the whole action (job.py) and leaves a JobReport (wire.py). The driver learns the
outcome from that report and from the job's state:

- a job that SUCCEEDED: its result is looked up in the cache (`lookup(key)`); the report adds
  the action's transfer counters;
- a job whose report says the action failed: a `Failed` with the action's one-line error and
  the tail of its log (the full job log is kept as <cache>/logs/<key>.job.log);
- a report that an input's bytes were unusable: an `InputUnavailable`;
- a report that another builder holds the action's lease, or a job that lost the lease while
  running (exit status LEASE_LOST_EXIT_CODE, no report): a `Busy`;
- a job lost to the infrastructure (its task killed by a signal, its worker gone, the job killed
  by somebody else; failures.py): submitted again under a new name (`<name>-retry<n>`: Iris
  keys work directories by job name), up to `retries` times.

Job names derive from the action key and the cache (`job_name`). A driver that restarts in the
middle of a build submits the same names. fray's `adopt_existing` then attaches to a job that is
still running instead of starting a second one. A job that has finished is run again, but the
job's `run_action` finds the published result in the cache at once.

One poller thread per executor submits queued jobs (at most `max_jobs` in flight) and polls
every job's state: one batched RPC per tick on Iris, `status()` per handle on LocalClient. There
is no thread per job, and no 30 s-capped backoff from fray's `wait()`.

Importing this module does not import fray or iris: the executor makes its backend (backend.py)
on the first remote action (fray's local backend ~0.1 s; Iris ~2-3 s).
"""

from __future__ import annotations

import dataclasses

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from mbuild.action.services import Services, process_services
from mbuild.action.spec import ActionSpec, Busy, ExecConfig, Failed, Outcome, Ran
from mbuild.rebuild.lookup import lookup_one
from mbuild.runners.base import OnDone, OnProgress
from mbuild.runners.fray.backend import Backend, make_backend
from mbuild.runners.fray.clients import BACKENDS
from mbuild.runners.fray.failures import detail_of, one_line
from mbuild.runners.fray.job_logs import failed_outcome, local_log, success_log
from mbuild.runners.fray.job_progress import progress_in
from mbuild.runners.fray.submission import RemoteJob, job_name
from mbuild.runners.fray.wire import JobReport, report_in
from mbuild.stores.results import ActionResult

PROGRESS_EVERY = 1.0  # seconds between two reads of a running job's log for its progress


class RemoteJobCancelled(Exception):
    """Passed to `on_done` for a job stopped by `cancel` / `cancel_all`."""


class FrayExecutor:
    """Runs remote-tagged actions as fray jobs; reports each outcome through `on_done`.

    `on_done(tag, outcome, exc, source)` is called from the executor's poller thread, like
    WorkerPool's callback from its slot threads: `tag` is what `submit` was given and `source`
    says where it ran, "fray:<backend>/<job id>" (the outcome's `source` attribute says the
    same). `outcome` is a `Ran`, `Failed`, `InputUnavailable` or `Busy`; `exc` is set instead for
    a cancelled job (`RemoteJobCancelled`) or an internal error of the executor.

    `lookup(key)` reads the action cache (default: the local cache of the job's ExecConfig); it
    is called from the poller thread. `namespace`: what job names are scoped by instead of this
    host's cache directory (e.g. a remote cache URL). `retries`: how many times a job lost to
    the infrastructure is submitted again. `services`: this process's open stores (default
    process_services()); jobs of the local backend run on threads here and use them too.
    """

    def __init__(
        self,
        backend: str = "local",
        *,
        on_done: OnDone,
        lookup: Callable[[str], ActionResult | None] | None = None,
        controller: str | None = None,
        max_jobs: int = 4,
        retries: int = 2,
        poll_interval: float | None = None,
        local_workers: int | None = None,
        namespace: str | None = None,
        services: Services | None = None,
        on_progress: OnProgress | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown fray backend {backend!r} (choose from {', '.join(BACKENDS)})")
        if backend == "iris" and not controller:
            raise ValueError("fray backend 'iris' needs a controller address (e.g. http://host:port)")
        self.backend = backend
        self.controller = controller
        self.max_jobs = max(1, int(max_jobs))
        self.retries = max(0, int(retries))
        self.poll_interval = poll_interval if poll_interval is not None else (0.05 if backend == "local" else 0.1)
        self.local_workers = local_workers
        self.namespace = namespace
        self.services = services or process_services()
        self._on_done = on_done
        self._on_progress = on_progress  # a job's ctx.progress, read from its log (job_progress.py)
        self._lookup = lookup
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: deque[RemoteJob] = deque()
        self._active: list[RemoteJob] = []
        self._closed = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._client: Backend | None = None
        self._client_error: BaseException | None = None
        self.stats = {"submitted": 0, "retried": 0, "polls": 0}

    # --- the Runner interface --------------------------------------------------------------------

    def submit(self, spec: ActionSpec, config: ExecConfig, tag: Any) -> RemoteJob:
        """Queue an action; it is submitted to fray as soon as fewer than `max_jobs` are in flight."""
        config = dataclasses.replace(config, fray_job=True)  # a resumable action works under the in-place prefix
        job = RemoteJob(tag, spec, config, job_name(spec.key, config, self.namespace), self.backend)
        with self._lock:
            if self._closed:
                raise RuntimeError("FrayExecutor is closed")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._poll_loop, name="mbuild-fray-poller", daemon=True)
                self._thread.start()
        self._wake.set()
        return job

    def cancel(self, handle: RemoteJob) -> None:
        """Stop one job: drop it if queued, terminate it if submitted. Reported as RemoteJobCancelled."""
        with self._lock:
            if handle.state == "done" or handle.cancelled:
                return
            handle.cancelled = True
        self._wake.set()

    def close(self, kill: bool = False) -> None:
        """Stop the poller and release the backend; an iris-local cluster is shut down.

        Jobs still running on an external Iris cluster keep running (a later build attaches to
        them by name) unless `kill` or `cancel_all` stopped them; on an iris-local cluster they
        die with it. LocalClient threads cannot be stopped: they finish in the background.
        Jobs still in flight get no `on_done` after close().
        """
        if kill:
            self.cancel_all()
        with self._lock:
            self._closed = True
            self._stop = True
        self._wake.set()
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- more for callers that want it -------------------------------------------------------------

    def cancel_all(self) -> None:
        """Cancel every job, and wait (up to 10 s) until each has been reported."""
        with self._lock:
            jobs = [*self._queue, *self._active]
            for job in jobs:
                job.cancelled = True
        self._wake.set()
        if self._thread is not None and threading.current_thread() is not self._thread:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with self._lock:
                    if not self._queue and not self._active:
                        break
                self._wake.set()
                time.sleep(0.01)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._active)

    def __enter__(self) -> FrayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close(kill=exc[0] is not None)

    # --- the poller thread -------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while True:
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            with self._lock:
                if self._stop:
                    break
            try:
                self._tick()
            except BaseException as exc:  # an executor bug: fail what is in flight, keep going
                self._fail_everything(exc)

    def _tick(self) -> None:
        with self._lock:
            cancelled = [j for j in (*self._queue, *self._active) if j.cancelled]
            for j in cancelled:
                if j in self._queue:
                    self._queue.remove(j)
                if j in self._active:
                    self._active.remove(j)
                j.state = "done"
            starting: list[RemoteJob] = []
            while self._queue and len(self._active) + len(starting) < self.max_jobs:
                starting.append(self._queue.popleft())
            self._active.extend(starting)
        for job in cancelled:
            if job.handle is not None and self._client is not None:
                self._client.terminate(job)
            self._report(job, None, RemoteJobCancelled(f"{job.spec.label}: cancelled"))
        if starting:
            client = self._ensure_client()
            for job in starting:
                if client is None:
                    self._finish(job, Failed(f"fray backend {self.backend!r} is unavailable: {one_line(self._client_error)}", detail_of(self._client_error), ""))
                else:
                    self._start(job)
        with self._lock:
            polling = [j for j in self._active if j.state == "submitted"]
            draining = [j for j in self._active if j.state == "draining"]
        if polling and self._client is not None:
            self.stats["polls"] += 1
            states = self._client.poll(polling)
            for job in polling:
                state = states.get(job)
                if state is not None and state not in ("pending", "running"):
                    self._finished(job, state)
                elif state == "running":
                    self._progress(job)
        for job in draining:
            self._drain(job)

    def _progress(self, job: RemoteJob) -> None:
        """Hand on the progress a running job wrote to its log since the last look (every PROGRESS_EVERY s).
        The in-process local backend reports directly (Services.reports), not through its log."""
        now = time.monotonic()
        if self._on_progress is None or self.backend == "local" or now - job.progress_read < PROGRESS_EVERY:
            return
        job.progress_read = now
        for record in progress_in(self._client.logs(job), job.progress_at):
            job.progress_at = record["at"]
            self._on_progress(job.tag, record)

    def _ensure_client(self) -> Backend | None:
        if self._client is None and self._client_error is None:
            try:
                self._client = make_backend(self.backend, controller=self.controller, max_jobs=self.max_jobs, retries=self.retries,
                                            local_workers=self.local_workers, wake=self._wake, services=self.services)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._client_error = exc
        return self._client

    def _start(self, job: RemoteJob) -> None:
        if job.attempts > 0:
            self.stats["retried"] += 1
            # A new name per retry: Iris keys a job's work directory by its name, and the lost
            # attempt's clean-up would remove the files of a resubmission under the same one.
            job.name = f"{job_name(job.spec.key, job.config, self.namespace)}-retry{job.attempts}"
        job.attempts += 1
        job.submitted_at = time.time()
        job.run_id = os.urandom(8).hex()
        try:
            job.handle = self._client.submit(job)
        except Exception as exc:
            self._finish(job, Failed(f"could not submit fray job {job.name}: {one_line(exc)}", detail_of(exc), ""))
            return
        job.job_id = job.handle.job_id
        job.state = "submitted"
        self.stats["submitted"] += 1

    # --- from a job's end to its outcome -----------------------------------------------------------

    def _finished(self, job: RemoteJob, state: str) -> None:
        """A job reached a terminal state ("succeeded", "failed", "killed", "worker_failed", ...)."""
        report = self._client.report(job)
        if state == "succeeded" or (report is not None and report.kind == "ran"):
            self._succeeded(job, report)
            return
        if report is not None and report.kind != "failed":
            self._finish(job, report.outcome())
            return
        job.failure = self._client.failure(job, state, report)
        if job.failure.lost:
            self._lost(job, job.failure.reason)
        elif job.failure.fenced:
            self._finish(job, Busy(None, fenced=True))  # it stopped without publishing
        else:
            job.state = "draining"
            job.drain_until = time.monotonic() + job.failure.log_wait
            self._drain(job)

    def _succeeded(self, job: RemoteJob, report: JobReport | None) -> None:
        result = self._lookup_result(job)
        if result is not None:
            counters = report.counters() if report is not None and report.kind == "ran" else {}
            self._finish(job, Ran(result, success_log(self._client, job), **counters))
            return
        self._finish(job, Failed(
            f"fray job {job.job_id} succeeded but the action's result is not in the cache ({job.config.cache_dir})",
            "The job's worker may not share this cache: a job publishes into the cache of the machine it runs on "
            "unless a remote cache is configured.", success_log(self._client, job)))

    def _lost(self, job: RemoteJob, reason: str) -> None:
        job.lost.append(reason)
        result = self._lookup_result(job)  # it may have published before it was lost
        if result is not None:
            self._finish(job, Ran(result, success_log(self._client, job)))
        elif len(job.lost) <= self.retries:
            self._start(job)
        else:
            self._finish(job, Failed(
                f"fray job {job.job_id} was lost {len(job.lost)} time(s), last: {reason}; gave up after {self.retries} retr{'y' if self.retries == 1 else 'ies'}",
                "\n".join(f"attempt {i + 1}: {r}" for i, r in enumerate(job.lost)), local_log(job) or ""))

    def _drain(self, job: RemoteJob) -> None:
        """Turn a failed job into its outcome once its log is complete (or the wait is over).

        A job on another machine leaves its report only in its log: it is looked for here.
        """
        failure = job.failure
        lines = self._client.logs(job)
        if failure.report is None and (found := report_in(lines)) is not None:
            if found.kind == "ran":
                self._succeeded(job, found)
                return
            if found.kind != "failed":
                self._finish(job, found.outcome())
                return
            failure = job.failure = failure.reported(found)
        if not failure.log_complete(lines) and time.monotonic() < job.drain_until:
            return  # the last lines are still on their way; look again next tick
        self._finish(job, failed_outcome(self._client, job, failure, lines))

    def _finish(self, job: RemoteJob, outcome: Outcome) -> None:
        with self._lock:
            if job in self._active:
                self._active.remove(job)
            job.state = "done"
        self._wake.set()  # a slot is free
        self._report(job, outcome, None)

    def _report(self, job: RemoteJob, outcome: Outcome | None, exc: BaseException | None) -> None:
        if outcome is not None:
            try:
                outcome.source = job.source
            except AttributeError:
                pass
        try:
            self._on_done(job.tag, outcome, exc, job.source)
        except Exception:  # the caller's bug must not take the other jobs down with it
            logging.getLogger("mbuild.runners.fray.executor").exception("on_done raised for %s", job.spec.label)

    def _fail_everything(self, exc: BaseException) -> None:
        with self._lock:
            jobs = [*self._queue, *self._active]
            self._queue.clear()
            self._active.clear()
            for j in jobs:
                j.state = "done"
        for job in jobs:
            self._report(job, None, exc)

    def _lookup_result(self, job: RemoteJob) -> ActionResult | None:
        """The published result of a job's action, if any (the caller's lookup, or the local cache)."""
        if self._lookup is not None:
            return self._lookup(job.key)
        found = lookup_one(job.key, self.services.stores(job.config.cache_dir)[1])
        return found.result if found is not None else None
