"""Remote execution through fray: remote-tagged actions run as fray jobs.

The job does the whole action. Inside the job, `run_remote_action` restores the driver's
`sys.path`, then calls `run_action` (or a replacement named by `runner`). That stages the inputs
from the cache, runs the rule, checks and hashes the outputs, stores the blobs and writes the
action-cache entry. Fray jobs return no value, so the driver learns the outcome from the job's
state and from the cache:

- a job that SUCCEEDED: its result is looked up in the cache (`lookup(key)`);
- a job that FAILED because the action failed: the job raised `RemoteActionFailed`; the driver
  shows its one-line error and the tail of the action's log;
- a job whose input bytes were unusable: it raised `RemoteInputUnavailable` and the driver gets
  an `InputUnavailable`;
- a job that found another builder holding the action's lease, or lost the lease while running
  (exit status 75): it raised `RemoteBusy` and the driver gets a `Busy`;
- a job lost to the infrastructure (its task killed by a signal, its worker gone, the job killed
  by somebody else): it is submitted again under the same name, up to `retries` times.

Job names derive from the action key and the cache (`job_name`). A driver that restarts in the
middle of a build submits the same names. fray's `adopt_existing` then attaches to a job that is
still running instead of starting a second one. A job that has finished is run again, but the
job's `run_action` finds the published result in the cache at once.

One poller thread per executor submits queued jobs (at most `max_jobs` in flight) and polls
every job's state: one batched RPC per tick on Iris, `status()` per handle on LocalClient. There
is no thread per job, and no 30 s-capped backoff from fray's `wait()`.

Importing this module does not import fray or iris: the executor imports its backend on the
first remote action (fray's local backend ~0.1 s; Iris ~2-3 s).

Backends:
  local       fray's LocalClient: jobs run in threads of this process (development, tests).
  iris        a running Iris cluster at `controller` ("http://host:port").
  iris-local  a whole Iris cluster started in this process on the first remote action and shut
              down by close(). Tasks are subprocesses that die with this process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import os
import pickle
import re
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbuild.action import execute as _execute
from mbuild.action.execute import ActionSpec, ExecConfig, Failed, InputUnavailable, Outcome, Ran
from mbuild.model.attrs import Resources
from mbuild.stores.results import ActionResult

BACKENDS = ("local", "iris", "iris-local")

_LOG_TAIL_LINES = 30
_ECHO_LIMIT = 1 << 20  # bytes of the action's log echoed into the job's log
_LOG_BEGIN = "===== mbuild: action log of {label} ({key}) ====="
_LOG_END = "===== mbuild: end of action log ====="
_RUN_LINE = "===== mbuild: job run {run_id} ====="
_JOB_LOG_LINES = 5000  # the last lines of a failed job's log that are fetched and kept
_LOG_WAIT = 3.0  # seconds to wait for a failed Iris job's last log lines to arrive
_RPC_GRACE = 120.0  # seconds of failing state RPCs before in-flight jobs are given up


# --- what a job raises ---------------------------------------------------------------------------


class RemoteActionFailed(Exception):
    """Raised inside a job when the action failed. The job FAILS, with the traceback in its log.

    `str(exc)` is the action's one-line error (the job's error message ends with it). `outcome`
    is the `Failed` itself; it reaches the driver only in process (LocalClient).
    """

    def __init__(self, outcome: Failed):
        super().__init__(outcome.error)
        self.outcome = outcome

    def __reduce__(self):
        return (RemoteActionFailed, (self.outcome,))


class RemoteInputUnavailable(Exception):
    """Raised inside a job when an input's bytes are missing or corrupt in the cache.

    `str(exc)` is a one-line JSON array `[label, reason]`, which the driver reads back from the
    job's error message.
    """

    def __init__(self, outcome: InputUnavailable):
        super().__init__(json.dumps([outcome.label, outcome.reason]))
        self.outcome = outcome

    def __reduce__(self):
        return (RemoteInputUnavailable, (self.outcome,))


class RemoteBusy(Exception):
    """Raised inside a job when another builder holds the action's lease (`Busy`), or took it over.

    `str(exc)` is one line of JSON (`{"holder": {...} | null, "fenced": bool}`), which the driver
    reads back from the job's error message and turns into a `Busy` again.
    """

    def __init__(self, outcome: Any):
        holder = getattr(outcome, "holder", None)
        body = {"holder": dataclasses.asdict(holder) if dataclasses.is_dataclass(holder) else None, "fenced": bool(getattr(outcome, "fenced", False))}
        super().__init__(json.dumps(body, separators=(",", ":")))
        self.outcome = outcome

    def __reduce__(self):
        return (RemoteBusy, (self.outcome,))


def _busy(holder: dict | None = None, fenced: bool = False) -> Any:
    """A `Busy` outcome (execute.Busy with a leases.Holder), from what a job reported."""
    from mbuild.leases import Holder

    return _execute.Busy(Holder(**holder) if holder else None, fenced=fenced)


class RemoteJobCancelled(Exception):
    """Passed to `on_done` for a job stopped by `cancel` / `cancel_all`."""


# --- the job -------------------------------------------------------------------------------------


def run_remote_action(
    spec: ActionSpec | bytes,
    config: ExecConfig | None = None,
    sys_path: list[str] | None = None,
    cwd: str | None = None,
    runner: str | None = None,
    run_id: str | None = None,
) -> None:
    """The body of a fray job that runs one action in a separate process (Iris).

    - `sys_path`: the driver's `sys.path`. It is restored first, so workspace rule modules
      import as they do in the driver. It travels inside the pickled callable, so the local
      cluster's rewriting of /tmp/... environment values cannot touch it.
    - `spec`: an ActionSpec, or `pickle.dumps((spec, config))`. The executor sends bytes so that
      objects from workspace modules in the spec are unpickled only after `sys.path` is back.
    - `cwd`: the driver's working directory; entered if it exists here.
    - `runner`: "module:function" called instead of `run_action(spec, config)`; it must return
      an Outcome (extension point: e.g. take the action's lease first).
    - `run_id`: printed first, so the driver can tell this run's log lines from those of an
      earlier job of the same name (Iris keeps them under the same job id).

    Returns normally on `Ran`: the result is already in the cache. Raises `RemoteActionFailed`
    or `RemoteInputUnavailable` otherwise. The action's own log is echoed into the job's log
    between marker lines. Everything goes to stderr, the stream the job's traceback uses, so the
    order of lines is kept.
    """
    if run_id:
        print(_RUN_LINE.format(run_id=run_id), file=sys.stderr, flush=True)
    if sys_path is not None:
        _restore_sys_path(sys_path)
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    if isinstance(spec, (bytes, bytearray)):
        spec, config = pickle.loads(spec)
    assert config is not None
    _apply_declared_env(spec)
    outcome = _runner(runner)(spec, config)
    if isinstance(outcome, (Ran, Failed)) and outcome.log:
        _echo_log(spec, Path(outcome.log))
    _leave_counters(spec, config, outcome, run_id)
    _raise_unless_ran(outcome)


def run_action_in_process(
    spec: ActionSpec, config: ExecConfig, runner: str | None = None, log_path: str | None = None, run_id: str | None = None,
) -> None:
    """The body of a fray job that runs in a thread of the driver (LocalClient).

    The action's file descriptors cannot be redirected here (they are the driver's), so the
    action runs with `capture_output=False`. Python-level output of this thread (the rule's
    prints, the failure's traceback) goes to `log_path` instead.
    """
    config = _in_process(config)
    if log_path is None:
        outcome = _runner(runner)(spec, config)
    else:
        with _thread_output_to(log_path):
            outcome = _runner(runner)(spec, config)
    _leave_counters(spec, config, outcome, run_id)
    _raise_unless_ran(outcome)


def counters_path(cache_dir: str, key: str) -> Path:
    """Where a job leaves its action's transfer counters for the driver: next to the job's log."""
    return Path(cache_dir) / "logs" / f"{key}.ran.json"


def _leave_counters(spec: ActionSpec, config: ExecConfig, outcome: Outcome, run_id: str | None) -> None:
    """A job returns no value: a `Ran`'s counters (bytes up and down, remote requests) and remote
    cache warnings go to a small file the driver reads and removes (`_take_counters`)."""
    if not isinstance(outcome, Ran):
        return
    path = counters_path(config.cache_dir, spec.key)
    body = {"run": run_id, "bytes_up": outcome.bytes_up, "bytes_down": outcome.bytes_down, "requests": outcome.requests, "warnings": outcome.warnings}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(json.dumps(body).encode())
        os.replace(tmp, path)
    except OSError:
        pass  # only the summary's counts suffer


def _take_counters(job: RemoteJob) -> dict[str, Any]:
    """The counters this run of the job left (see _leave_counters), as Ran fields; {} if none."""
    path = counters_path(job.config.cache_dir, job.key)
    try:
        body = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    try:
        path.unlink()
    except OSError:
        pass
    if not isinstance(body, dict) or body.get("run") != job.run_id:
        return {}
    fields = {k: body[k] for k in ("bytes_up", "bytes_down", "requests") if isinstance(body.get(k), int)}
    warnings = body.get("warnings")
    if isinstance(warnings, list):
        fields["warnings"] = [str(w) for w in warnings]
    return fields


def _in_process(config: ExecConfig) -> ExecConfig:
    """The config for a run in a thread of the driver: no fd redirection; a lost lease interrupts
    the thread instead of ending the process."""
    changes: dict[str, Any] = {"capture_output": False}
    if "in_process" in {f.name for f in dataclasses.fields(config)}:
        changes["in_process"] = True
    return dataclasses.replace(config, **changes)


def _raise_unless_ran(outcome: Outcome) -> None:
    if isinstance(outcome, Failed):
        raise RemoteActionFailed(outcome)
    if isinstance(outcome, InputUnavailable):
        raise RemoteInputUnavailable(outcome)
    busy = getattr(_execute, "Busy", None)
    if busy is not None and isinstance(outcome, busy):
        raise RemoteBusy(outcome)
    if not isinstance(outcome, Ran):
        raise TypeError(f"the action runner returned {type(outcome).__name__}, not an Outcome")


def _runner(name: str | None) -> Callable[[ActionSpec, ExecConfig], Outcome]:
    if name is None:
        from mbuild.action.execute import run_action

        return run_action
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _restore_sys_path(sys_path: list[str]) -> None:
    extra = [p for p in sys.path if p not in sys_path]
    sys.path[:] = list(sys_path) + extra
    importlib.invalidate_caches()


def _apply_declared_env(spec: ActionSpec) -> None:
    """Make the process environment hold exactly the declared values (the ones in the key).

    The job's environment also carries them, but a local cluster rewrites values that start with
    /tmp/ and the like, and an unset variable cannot be expressed there at all.
    """
    for name, value in spec.env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _echo_log(spec: ActionSpec, path: Path) -> None:
    """Copy the action's log into the job's log (stdout), so it is reachable from the driver."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size > _ECHO_LIMIT:
                f.seek(size - _ECHO_LIMIT)
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return
    out = sys.stderr
    out.write(_LOG_BEGIN.format(label=spec.label, key=spec.key) + "\n")
    if size > _ECHO_LIMIT:
        out.write(f"[... first {size - _ECHO_LIMIT} bytes left out; full log: {path}]\n")
    out.write(data if data.endswith("\n") or not data else data + "\n")
    out.write(_LOG_END + "\n")
    out.flush()


# --- per-thread output routing (in-process jobs) ------------------------------------------------


class _ThreadRouter:
    """Stands in for sys.stdout / sys.stderr: writes of registered threads go to their own file."""

    def __init__(self, base: Any):
        self._base = base
        self.routes: dict[int, Any] = {}

    def write(self, text: str) -> int:
        f = self.routes.get(threading.get_ident())
        if f is None:
            return self._base.write(text)
        f.write(text)
        return len(text)

    def flush(self) -> None:
        f = self.routes.get(threading.get_ident())
        (self._base if f is None else f).flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


_route_lock = threading.Lock()
_route_users = 0
_routers: tuple[_ThreadRouter, _ThreadRouter] | None = None


@contextmanager
def _thread_output_to(path: str):
    global _route_users, _routers
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w", buffering=1, encoding="utf-8", errors="replace")
    ident = threading.get_ident()
    with _route_lock:
        if _route_users == 0:
            _routers = (_ThreadRouter(sys.stdout), _ThreadRouter(sys.stderr))
            sys.stdout, sys.stderr = _routers
        _route_users += 1
        for r in _routers:
            r.routes[ident] = f
    try:
        yield f
    finally:
        with _route_lock:
            for r in _routers:
                r.routes.pop(ident, None)
            _route_users -= 1
            if _route_users == 0:
                out, err = _routers
                if sys.stdout is out:
                    sys.stdout = out._base
                if sys.stderr is err:
                    sys.stderr = err._base
                _routers = None
        f.close()


# --- mapping an action onto a fray job ------------------------------------------------------------


def job_name(key: str, config: ExecConfig, namespace: str | None = None) -> str:
    """The fray job name of an action: `mbuild-<key>-<cache tag>`.

    The same action publishing into the same cache always gets the same name (idempotent
    submission). The cache tag keeps two caches from sharing one job, since a job publishes
    into one cache only. By default it is derived from this host and `config.cache_dir`.
    """
    where = namespace if namespace is not None else f"{socket.gethostname()}:{os.path.abspath(config.cache_dir)}"
    return f"mbuild-{key}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


def resource_config(resources: Resources | dict | None):
    """A fray ResourceConfig for an action's Resources (imports fray).

    cpu/ram/disk are always passed explicitly: fray's defaults (disk=64g) cannot be scheduled on
    a local Iris cluster. `accelerator`: "tpu:<type>" or a bare TPU type ("v4-8",
    "v5litepod-16") gives a TPU; "gpu:<type>", "gpu:<type>:<count>" or "<type>x<count>" a GPU.
    """
    from fray.types import ResourceConfig

    r = Resources.of(resources, "resources") if not isinstance(resources, Resources) else resources
    r = r or Resources()
    common = {"cpu": r.cpu, "ram": r.ram, "disk": r.disk}
    acc = (r.accelerator or "").strip()
    if not acc or acc.lower() == "cpu":
        return ResourceConfig.with_cpu(**common)
    kind, _, rest = acc.partition(":")
    if kind.lower() == "tpu" or (not rest and re.match(r"^v\d", acc)):
        return ResourceConfig.with_tpu(rest if kind.lower() == "tpu" else acc, **common)
    gpu = rest if kind.lower() == "gpu" else acc
    count = 1
    m = re.match(r"^(.+?)(?::(\d+)|x(\d+))$", gpu)
    if m:
        gpu, count = m.group(1), int(m.group(2) or m.group(3))
    return ResourceConfig.with_gpu(gpu, count=count, **common)


def declared_env_vars(spec: ActionSpec) -> dict[str, str]:
    """The action's declared environment variables that are set (unset ones can't be sent)."""
    return {k: v for k, v in spec.env.items() if v is not None}


# --- the executor --------------------------------------------------------------------------------


@dataclass(eq=False)
class RemoteJob:
    """One remote-tagged action on its way through fray: what `on_done` receives first.

    `source` is where it ran: "fray:<backend>/<job id>" (e.g. "fray:iris-local/root/mbuild-...").
    """

    tag: Any
    spec: ActionSpec
    config: ExecConfig
    name: str
    backend: str
    job_id: str | None = None
    attempts: int = 0  # submissions so far (1 + lost-job retries)
    lost: list[str] = field(default_factory=list)  # why earlier attempts were lost
    state: str = "queued"  # queued | submitted | draining | done
    cancelled: bool = False
    handle: Any = field(default=None, repr=False)
    submitted_at: float = 0.0  # wall clock of the latest submission
    run_id: str = ""  # marks this submission's lines in the job's log
    drain_until: float = 0.0
    failure: Any = field(default=None, repr=False)

    @property
    def source(self) -> str:
        return f"fray:{self.backend}/{(self.job_id or self.name).lstrip('/')}"

    @property
    def key(self) -> str:
        return self.spec.key


OnDone = Callable[[RemoteJob, "Outcome | None", "BaseException | None"], None]


class FrayExecutor:
    """Runs remote-tagged actions as fray jobs; reports each outcome through `on_done`.

    `on_done(job, outcome, exc)` is called from the executor's poller thread, like WorkerPool's
    callback from its slot threads: `job.tag` is the caller's handle and `job.source` says where
    it ran (the outcome also gets a `source` attribute with the same string). `outcome` is a
    `Ran`, `Failed`, `InputUnavailable` or `Busy`; `exc` is set instead for a cancelled job
    (`RemoteJobCancelled`) or an internal error of the executor.

    `lookup(key)` reads the action cache (default: the local cache of the job's ExecConfig); it
    is called from the poller thread. `runner`: see `run_remote_action`. `namespace`: what job
    names are scoped by instead of this host's cache directory (e.g. a remote cache URL).
    `retries`: how many times a job lost to the infrastructure is submitted again.
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
        runner: str | None = None,
        extras: tuple[str, ...] = (),
        namespace: str | None = None,
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
        self.runner = runner
        self.extras = tuple(extras)
        self.namespace = namespace
        self._on_done = on_done
        self._lookup = lookup
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: deque[RemoteJob] = deque()
        self._active: list[RemoteJob] = []
        self._closed = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._client: _Backend | None = None
        self._client_error: BaseException | None = None
        self.stats = {"submitted": 0, "retried": 0, "polls": 0}

    # --- public API ------------------------------------------------------------------------------

    def submit(self, spec: ActionSpec, config: ExecConfig, tag: Any) -> RemoteJob:
        """Queue an action; it is submitted to fray as soon as fewer than `max_jobs` are in flight."""
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

    def cancel(self, job: RemoteJob) -> None:
        """Stop one job: drop it if queued, terminate it if submitted. Reported as RemoteJobCancelled."""
        with self._lock:
            if job.state == "done" or job.cancelled:
                return
            job.cancelled = True
        self._wake.set()

    def cancel_all(self) -> None:
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
                    self._finish(job, Failed(f"fray backend {self.backend!r} is unavailable: {_one_line(self._client_error)}", _detail(self._client_error), ""))
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
        for job in draining:
            self._drain(job)

    def _ensure_client(self) -> _Backend | None:
        if self._client is None and self._client_error is None:
            try:
                self._client = _make_backend(self)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._client_error = exc
        return self._client

    def _start(self, job: RemoteJob) -> None:
        if job.attempts > 0:
            self.stats["retried"] += 1
        job.attempts += 1
        job.submitted_at = time.time()
        job.run_id = os.urandom(8).hex()
        try:
            job.handle = self._client.submit(job)
        except Exception as exc:
            self._finish(job, Failed(f"could not submit fray job {job.name}: {_one_line(exc)}", _detail(exc), ""))
            return
        job.job_id = job.handle.job_id
        job.state = "submitted"
        self.stats["submitted"] += 1

    def _finished(self, job: RemoteJob, state: str) -> None:
        """A job reached a terminal state ("succeeded", "failed", "killed", "worker_failed", ...)."""
        if state == "succeeded":
            result = self._lookup_result(job)
            if result is not None:
                self._finish(job, Ran(result, self._success_log(job), **_take_counters(job)))
            else:
                where = job.config.cache_dir
                self._finish(job, Failed(
                    f"fray job {job.job_id} succeeded but the action's result is not in the cache ({where})",
                    "The job's worker may not share this cache: a job publishes into the cache of the machine it runs on "
                    "unless a remote cache is configured.", self._success_log(job)))
            return
        job.failure = self._client.failure(job, state)
        if job.failure.lost:
            self._lost(job, job.failure.reason)
            return
        job.state = "draining"
        job.drain_until = time.monotonic() + job.failure.log_wait
        self._drain(job)

    def _lost(self, job: RemoteJob, reason: str) -> None:
        job.lost.append(reason)
        result = self._lookup_result(job)  # it may have published before it was lost
        if result is not None:
            self._finish(job, Ran(result, self._success_log(job), **_take_counters(job)))
        elif len(job.lost) <= self.retries:
            self._start(job)
        else:
            self._finish(job, Failed(
                f"fray job {job.job_id} was lost {len(job.lost)} time(s), last: {reason}; gave up after {self.retries} retr{'y' if self.retries == 1 else 'ies'}",
                "\n".join(f"attempt {i + 1}: {r}" for i, r in enumerate(job.lost)), self._local_log(job) or ""))

    def _drain(self, job: RemoteJob) -> None:
        """Turn a failed job into its outcome once its log is complete (or the wait is over)."""
        failure = job.failure
        if failure.input_unavailable is not None:
            self._finish(job, InputUnavailable(*failure.input_unavailable))
            return
        if failure.busy is not None:
            self._finish(job, failure.outcome if failure.outcome is not None else _busy(*failure.busy))
            return
        lines = self._client.logs(job)
        if not failure.log_complete(lines) and time.monotonic() < job.drain_until:
            return  # the last lines are still on their way; look again next tick
        self._finish(job, self._failed_outcome(job, failure, lines))

    def _failed_outcome(self, job: RemoteJob, failure: _Failure, lines: list[str]) -> Outcome:
        if failure.outcome is not None and not lines:
            return failure.outcome
        job_log = self._client.log_path(job) or self._save_job_log(job, lines)
        action_log = self._local_log(job)
        body = _between_markers(lines)
        detail = "\n".join((body if body is not None else lines)[-_LOG_TAIL_LINES:])
        if failure.outcome is not None:  # in process: the Failed itself, with our log
            detail = detail or failure.outcome.detail
            return Failed(failure.outcome.error, detail, job_log or failure.outcome.log)
        return Failed(failure.error, detail or failure.reason, action_log or job_log or "")

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
            self._on_done(job, outcome, exc)
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

    # --- cache and logs ----------------------------------------------------------------------------

    def _lookup_result(self, job: RemoteJob) -> ActionResult | None:
        if self._lookup is not None:
            return self._lookup(job.key)
        from mbuild.action.execute import open_stores

        _, db = open_stores(job.config.cache_dir)
        return db.valid_result(job.key)

    def _local_log(self, job: RemoteJob) -> str | None:
        """The action's own log (<cache>/logs/<key>.log) if this run wrote one on this machine."""
        path = Path(job.config.cache_dir) / "logs" / f"{job.key}.log"
        try:
            st = path.stat()
        except OSError:
            return None
        return str(path) if st.st_size > 0 and st.st_mtime >= job.submitted_at - 2 else None

    def _success_log(self, job: RemoteJob) -> str:
        return self._local_log(job) or self._client.log_path(job) or ""

    def _save_job_log(self, job: RemoteJob, lines: list[str]) -> str | None:
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


# --- failures ------------------------------------------------------------------------------------


@dataclass
class _Failure:
    """What the backend could tell about a job that did not succeed."""

    error: str  # one line, for the user
    reason: str = ""  # the backend's own words (state, exit code, message)
    lost: bool = False  # lost to the infrastructure: retry it
    outcome: Any = None  # in process: the Failed (or Busy) itself
    input_unavailable: tuple[str, str] | None = None
    busy: tuple[dict | None, bool] | None = None  # (holder, fenced): another builder has the action
    log_wait: float = 0.0  # how long to wait for the job's log to be complete
    last_line: str | None = None  # the log is complete once this line has arrived

    def log_complete(self, lines: list[str]) -> bool:
        if not lines:
            return False
        if self.last_line:
            return any(self.last_line in line for line in lines)
        return True


_ACTION_FAILED = "RemoteActionFailed: "
_BUSY = "RemoteBusy: "
_LEASE_LOST_EXIT = 75  # leases.LEASE_LOST_EXIT_CODE: a job that lost its lease exits with it
_INPUT_GONE = "RemoteInputUnavailable: "
_SIGNAL_EXIT = re.compile(r"Exit code:? (-\d+)\b|Exit code (1[3-9]\d|2[0-5]\d): killed by")


def classify_iris_failure(state: str, message: str, cancelled_by_us: bool = False) -> _Failure:
    """Decide what a finished, unsuccessful Iris job means (pure function; see the tests).

    - the job raised RemoteActionFailed: the action failed (not retried);
    - it raised RemoteInputUnavailable: an input must be rebuilt;
    - WORKER_FAILED, KILLED by somebody else, a task killed by a signal (not an OOM verdict),
      or a job that vanished from the controller: lost, retried;
    - UNSCHEDULABLE and anything else (e.g. the job could not even import mbuild): failed.
    """
    msg = _tidy(message or "")
    last = msg.rsplit("stderr: ", 1)[-1].strip() if "stderr: " in msg else None
    if _BUSY in msg:
        try:
            body = json.loads(msg.split(_BUSY, 1)[1].strip())
            return _Failure("another builder holds the action's lease", msg, busy=(body.get("holder"), bool(body.get("fenced"))))
        except (ValueError, TypeError, AttributeError):
            pass
    if re.search(rf"Exit code:? {_LEASE_LOST_EXIT}\b", msg):  # the job lost its lease and stopped itself
        return _Failure("the job lost the action's lease", msg, busy=(None, True))
    if _INPUT_GONE in msg:
        try:
            label, reason = json.loads(msg.split(_INPUT_GONE, 1)[1].strip())
            return _Failure(f"input {label} unusable: {reason}", msg, input_unavailable=(label, reason))
        except (ValueError, TypeError):
            pass
    if _ACTION_FAILED in msg:
        return _Failure(msg.split(_ACTION_FAILED, 1)[1].strip(), msg, log_wait=_LOG_WAIT, last_line=last)
    if state == "missing":
        return _Failure("the job vanished from the Iris controller", "job not found on the controller", lost=True)
    if state == "worker_failed":
        return _Failure("the job's worker failed", f"WORKER_FAILED: {msg}", lost=True)
    if state == "killed":
        if cancelled_by_us:
            return _Failure("the job was cancelled", f"KILLED: {msg}")
        return _Failure("the job was killed", f"KILLED (not by this build): {msg}", lost=True)
    if state == "unschedulable":
        return _Failure(f"the job cannot be scheduled: {msg}", f"UNSCHEDULABLE: {msg}")
    if _SIGNAL_EXIT.search(msg) and "OOM killed" not in msg:
        return _Failure("the job's task was killed", f"task killed: {msg}", lost=True)
    return _Failure(f"fray job failed: {last or msg or state}", msg, log_wait=_LOG_WAIT, last_line=last)


_RUN_LINE_RE = re.compile(r"\. stderr: ===== mbuild: job run [0-9a-f]+ =====$")


def _tidy(message: str) -> str:
    """Iris's failure message without the retry-budget preamble and without our run marker."""
    message = re.sub(r"^Cumulative failed task attempts exceeded max_task_failures: failures=\d+, limit=\d+; ", "", message.strip())
    return _RUN_LINE_RE.sub("", message)


def _between_markers(lines: list[str]) -> list[str] | None:
    """The echoed action log inside a job log, or None if there is none."""
    end = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(_LOG_END):
            end = i
            break
    if end is None:
        return None
    for i in range(end - 1, -1, -1):
        if lines[i].startswith("===== mbuild: action log of "):
            return lines[i + 1 : end]
    return None


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _detail(exc: BaseException | None) -> str:
    return "".join(traceback.format_exception(exc)).rstrip() if exc is not None else ""


# --- backends ------------------------------------------------------------------------------------


class _Backend:
    kind = ""

    def submit(self, job: RemoteJob) -> Any: ...

    def poll(self, jobs: list[RemoteJob]) -> dict[RemoteJob, str]: ...

    def failure(self, job: RemoteJob, state: str) -> _Failure: ...

    def logs(self, job: RemoteJob) -> list[str]:
        """The job's log lines (as far as they are available now)."""
        return []

    def log_path(self, job: RemoteJob) -> str | None:
        """A file already holding the job's log on this machine, if the backend keeps one."""
        return None

    def terminate(self, job: RemoteJob) -> None:
        try:
            job.handle.terminate()
        except Exception:
            pass

    def close(self) -> None: ...


def _make_backend(ex: FrayExecutor) -> _Backend:
    if ex.backend == "local":
        return _LocalBackend(ex)
    return _IrisBackend(ex)


def _request(ex: FrayExecutor, job: RemoteJob, entrypoint) -> Any:
    from fray.types import JobRequest, create_environment

    return JobRequest(
        name=job.name,
        entrypoint=entrypoint,
        resources=resource_config(job.spec.resources),
        environment=create_environment(workspace=job.config.workspace_root, env_vars=declared_env_vars(job.spec), extras=list(ex.extras)),
        max_retries_failure=0,  # an action failure is final; lost tasks are resubmitted by the executor
        max_retries_preemption=ex.retries,  # preempted / dead workers: retried by Iris inside the job
    )


class _LocalBackend(_Backend):
    """fray's LocalClient: each job is a thread of this process."""

    kind = "local"

    def __init__(self, ex: FrayExecutor):
        from fray.local_backend import LocalClient
        from fray.types import Entrypoint, JobStatus

        self.ex = ex
        self.client = LocalClient(max_threads=ex.max_jobs)
        _quiet_local_backend()
        self.Entrypoint, self.JobStatus = Entrypoint, JobStatus

    def submit(self, job: RemoteJob) -> Any:
        # Open this process's stores here, in one thread: the per-process caches in execute are
        # not locked, and jobs start in several threads at once.
        _execute.open_stores(job.config.cache_dir)
        if hasattr(_execute, "lease_store"):
            _execute.lease_store(job.config)
        log = str(self._log_file(job))
        entry = self.Entrypoint.from_callable(run_action_in_process, args=[job.spec, job.config, self.ex.runner, log, job.run_id])
        handle = self.client.submit(_request(self.ex, job, entry))
        future = getattr(handle, "_future", None)
        if future is not None:  # wake the poller at once instead of at its next tick
            wake = self.ex._wake
            future.add_done_callback(lambda _f: wake.set())
        return handle

    def poll(self, jobs: list[RemoteJob]) -> dict[RemoteJob, str]:
        out = {}
        for job in jobs:
            s = job.handle.status()
            out[job] = {self.JobStatus.SUCCEEDED: "succeeded", self.JobStatus.FAILED: "failed", self.JobStatus.STOPPED: "killed"}.get(s, "running")
        return out

    def failure(self, job: RemoteJob, state: str) -> _Failure:
        try:
            job.handle.wait(timeout=0, raise_on_failure=True)
        except RemoteActionFailed as exc:
            return _Failure(exc.outcome.error, exc.outcome.error, outcome=exc.outcome)
        except RemoteInputUnavailable as exc:
            o = exc.outcome
            return _Failure(f"input {o.label} unusable: {o.reason}", o.reason, input_unavailable=(o.label, o.reason))
        except RemoteBusy as exc:
            return _Failure("another builder holds the action's lease", str(exc), busy=(None, False), outcome=exc.outcome)
        except BaseException as exc:
            return _Failure(f"fray job failed: {_one_line(exc)}", _detail(exc), outcome=Failed(f"fray job failed: {_one_line(exc)}", _detail(exc), ""))
        return _Failure(f"fray job ended {state}", state)

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


class _IrisBackend(_Backend):
    """An Iris cluster: external (`iris`, at ex.controller) or started here (`iris-local`)."""

    def __init__(self, ex: FrayExecutor):
        self.ex = ex
        self.kind = ex.backend
        try:
            from fray.iris_backend import FrayIrisClient
            from fray.types import Entrypoint
            from iris.client.client import IrisClient
            from iris.client.workload_codec import job_state_from_proto
            from iris.cluster.types import JobName
        except ImportError as exc:
            raise RuntimeError(f"fray backend {ex.backend!r} needs the Iris cluster support: install mbuild[cluster] ({exc})") from exc
        self.Entrypoint, self.JobName, self.state_from_proto = Entrypoint, JobName, job_state_from_proto
        self._cancelled: set[str] = set()
        self._rpc_failing_since: float | None = None
        self.owns_cluster = ex.backend == "iris-local"
        if self.owns_cluster:
            from iris.client.client import LocalClientConfig
            from iris.client.local_client import make_local_client

            # each local worker offers 8 CPUs; the autoscaler adds workers as jobs queue up
            workers = ex.local_workers or max(1, min(4, math.ceil(ex.max_jobs / 4)))
            self.ic = make_local_client(LocalClientConfig(max_workers=workers))
            _register_shutdown(self)
        else:
            address = ex.controller if "://" in ex.controller else f"http://{ex.controller}"
            self.ic = IrisClient.remote(address)
        self.fc = FrayIrisClient.from_iris_client(self.ic)

    def submit(self, job: RemoteJob) -> Any:
        payload = pickle.dumps((job.spec, job.config), protocol=pickle.HIGHEST_PROTOCOL)
        entry = self.Entrypoint.from_callable(run_remote_action, args=[payload, None, list(sys.path), os.getcwd(), self.ex.runner, job.run_id])
        handle = self.fc.submit(_request(self.ex, job, entry), adopt_existing=True)
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

    def failure(self, job: RemoteJob, state: str) -> _Failure:
        message = ""
        deadline = time.monotonic() + 1.0
        while state != "missing":
            try:
                message = self.ic.job_status(self.JobName.from_wire(job.job_id)).error_message or ""
            except Exception as exc:
                message = f"(could not read the job's status: {_one_line(exc)})"
            if message or state != "failed" or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # a failed job's message may trail its state
        return classify_iris_failure(state, message, cancelled_by_us=job.job_id in self._cancelled)

    def logs(self, job: RemoteJob) -> list[str]:
        """This run's lines: a re-run job keeps its earlier runs' lines under the same id."""
        try:
            entries = job.handle._job.logs(max_lines=_JOB_LOG_LINES, tail=True)
        except Exception:
            try:
                return list(job.handle.logs(max_lines=_JOB_LOG_LINES))
            except Exception:
                return []
        marker = _RUN_LINE.format(run_id=job.run_id)
        start = [e for e in entries if e.data.rstrip("\n") == marker]
        if start:  # lines stamped no earlier than our run's first line (the worker's clock)
            t0 = min(e.timestamp.epoch_ms() for e in start)
            entries = [e for e in entries if e.timestamp.epoch_ms() >= t0]
        return [e.data.rstrip("\n") for e in entries if e.data.rstrip("\n") != marker]

    def terminate(self, job: RemoteJob) -> None:
        self._cancelled.add(job.job_id)
        super().terminate(job)

    def close(self) -> None:
        _unregister_shutdown(self)
        try:
            self.ic.shutdown(wait=False)
        except Exception:
            pass


# --- making sure an iris-local cluster never outlives the interpreter's last chance ---------------

_live_clusters: set = set()  # strong references: an unreachable executor's cluster still needs stopping
_shutdown_hook_installed = False


def _register_shutdown(backend: _IrisBackend) -> None:
    """Shut iris-local clusters down at interpreter exit if close() was never called.

    Registered with threading's pre-join hook when available: a live cluster's threads would
    otherwise keep the interpreter from exiting at all.
    """
    global _shutdown_hook_installed
    _live_clusters.add(backend)
    if not _shutdown_hook_installed:
        _shutdown_hook_installed = True
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            try:
                register(_shutdown_all)
                return
            except RuntimeError:
                pass
        import atexit

        atexit.register(_shutdown_all)


def _unregister_shutdown(backend: _IrisBackend) -> None:
    _live_clusters.discard(backend)


def _shutdown_all() -> None:
    if _live_clusters:
        with quiet_interpreter_exit():
            for backend in list(_live_clusters):
                backend.close()


@contextmanager
def quiet_interpreter_exit():
    """Mute what a local cluster's threads say when it is stopped at interpreter exit.

    By then no new thread can start, so its servers' shutdown paths fail loudly (harmlessly: the
    cluster does stop). Logging and the thread excepthook are silenced while it stops.
    """
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: None
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        threading.excepthook = previous_hook
