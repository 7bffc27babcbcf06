"""`remote`: run a step as a fray job, Marin's way. Composes with `disk_cached` / `distributed_lock`.

    from mbuild.steps.primitives import disk_cached, distributed_lock
    from mbuild.steps.remote import remote

    def tokenize(output_path: str) -> None: ...          # writes its results under output_path

    remote(tokenize, resources={"cpu": 4, "ram": "8g"})("gs://bucket/tok-3f2a")
    # run once across builders, on the cluster, cached where it wrote:
    remote(disk_cached(distributed_lock(tokenize)), resources=..., backend="iris",
           controller="http://host:10000")("gs://bucket/tok-3f2a")

`remote(fn, ...)` returns a `RemoteCallable`. Calling it submits `fn(*args, **kwargs)` as a fray
job and waits for it. Fray jobs return no value, so the call returns None: `fn` writes its
results to storage (with `disk_cached`, a later `disk_cached(fn)(path)` reads them back as a hit).
A failed job raises `RemoteJobFailed` with the job's error and the tail of its log.

- The job name is `<name or fn's name>-<hash of the arguments>`. The same call from another
  process attaches to a job of that name that is still running (fray's `adopt_existing`).
- `resources`: mbuild `Resources`, a dict of its fields, or a fray `ResourceConfig`. cpu/ram/disk
  are always explicit, since fray's defaults can't be scheduled on a local Iris cluster.
- `env_vars` go into the job's environment (`create_environment`). They are also set again inside
  the job, because a local cluster rewrites values that start with /tmp/.
- `pip_dependency_groups` become the environment's extras. A local Iris cluster does not
  install anything: it runs the same virtualenv.
- The job restores the caller's `sys.path` and working directory before unpickling `fn`, so
  functions from modules of the workspace import as they do in the caller.
- `backend`: "local" (fray's LocalClient: a thread of this process, shared by all calls), "iris"
  (a cluster at `controller`), "iris-local" (one Iris cluster started in this process on first
  use, shut down at exit or by `shutdown_remote_clients()`), "current" (fray's
  `current_client()`, e.g. the cluster a task runs in), or pass a fray `client=` directly.
  The clients are those of runners/fray/clients.py, the one fray integration of mbuild.

Importing this module does not import fray or iris (nor mbuild's fray integration, which
`import mbuild` would otherwise pay for).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mbuild.model.attrs import Resources

_POLL = 0.1
_LOG_TAIL = 40


class RemoteJobFailed(Exception):
    """A remote step's job did not succeed. `job_id`, `state`, `log_tail` (the last log lines)."""

    def __init__(self, message: str, job_id: str = "", state: str = "", log_tail: str = ""):
        super().__init__(message + (f"\n--- last lines of the job's log ---\n{log_tail}" if log_tail else ""))
        self.job_id, self.state, self.log_tail = job_id, state, log_tail


@dataclass(frozen=True)
class RemoteCallable:
    """A callable that submits `fn(*args, **kwargs)` as a fray job and waits for it (returns None)."""

    fn: Callable[..., Any]
    resources: Any = None
    env_vars: dict[str, str] = field(default_factory=dict)
    pip_dependency_groups: list[str] = field(default_factory=list)
    backend: str = "local"
    controller: str | None = None
    name: str | None = None
    client: Any = None
    timeout: float | None = None
    poll_interval: float = _POLL

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        from fray.types import Entrypoint, JobRequest, JobStatus, create_environment

        from mbuild.runners.fray.clients import is_in_process, shared_client

        client = self.client if self.client is not None else shared_client(self.backend, self.controller)
        in_process = is_in_process(client)
        if in_process:
            entry = Entrypoint.from_callable(self.fn, args=list(args), kwargs=dict(kwargs))
        else:
            import cloudpickle

            payload = cloudpickle.dumps((self.fn, args, kwargs))
            entry = Entrypoint.from_callable(
                run_remote_call, args=[payload, list(sys.path), os.getcwd(), dict(self.env_vars)]
            )
        request = JobRequest(
            name=self.job_name(*args, **kwargs),
            entrypoint=entry,
            resources=_resource_config(self.resources),
            environment=create_environment(env_vars=dict(self.env_vars), extras=list(self.pip_dependency_groups)),
        )
        handle = client.submit(request, adopt_existing=True)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        delay = min(0.02, self.poll_interval)
        while True:
            status = handle.status()
            if JobStatus.finished(status):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"remote job {handle.job_id} did not finish in {self.timeout}s")
            time.sleep(delay)
            delay = min(delay * 1.5, self.poll_interval)
        if status == JobStatus.SUCCEEDED:
            return None
        _raise_failure(handle, status, in_process)

    def job_name(self, *args: Any, **kwargs: Any) -> str:
        base = self.name or getattr(self.fn, "__name__", None) or type(self.fn).__name__
        digest = hashlib.sha256((repr(args) + repr(sorted(kwargs.items()))).encode()).hexdigest()[:12]
        name = re.sub(r"[^a-z0-9_.-]+", "-", f"{base}-{digest}".lower()).strip("-.")
        return name or f"remote-{digest}"


def remote(
    fn: Callable[..., Any] | None = None,
    *,
    resources: Resources | dict | Any | None = None,
    env_vars: dict[str, str] | None = None,
    pip_dependency_groups: list[str] | None = None,
    backend: str = "local",
    controller: str | None = None,
    name: str | None = None,
    client: Any = None,
    timeout: float | None = None,
    poll_interval: float = _POLL,
):
    """Wrap `fn` so that calling it runs `fn(*args, **kwargs)` as a fray job and waits (returns None).

    Also usable as a decorator: `@remote` or `@remote(resources={...}, backend="iris", ...)`.
    """
    if backend not in ("local", "iris", "iris-local", "current"):
        raise ValueError(f"unknown backend {backend!r} (local, iris, iris-local or current)")
    if backend == "iris" and not controller and client is None:
        raise ValueError("backend 'iris' needs controller='http://host:port'")

    def wrap(f: Callable[..., Any]) -> RemoteCallable:
        return RemoteCallable(
            f, resources, dict(env_vars or {}), list(pip_dependency_groups or []), backend, controller, name, client,
            timeout, poll_interval,
        )

    return wrap if fn is None else wrap(fn)


def run_remote_call(payload: bytes, sys_path: list[str], cwd: str | None, env_vars: dict[str, str]) -> None:
    """The body of a `remote` job in a separate process: restore the caller's view, then call fn."""
    import cloudpickle

    from mbuild.runners.fray.clients import enter_caller_view

    enter_caller_view(sys_path, cwd)
    os.environ.update(env_vars)
    fn, args, kwargs = cloudpickle.loads(payload)
    fn(*args, **kwargs)


def shutdown_remote_clients() -> None:
    """Shut down the clients `remote` started (the iris-local cluster among them)."""
    from mbuild.runners.fray.clients import shutdown_shared_clients

    shutdown_shared_clients()


def _raise_failure(handle: Any, status: Any, in_process: bool) -> None:
    from mbuild.runners.fray.failures import stderr_tail

    if in_process:
        try:
            handle.wait(timeout=0, raise_on_failure=True)
        except BaseException as exc:
            raise RemoteJobFailed(f"remote job {handle.job_id} {status}: {type(exc).__name__}: {exc}", handle.job_id, str(status)) from exc
        raise RemoteJobFailed(f"remote job {handle.job_id} {status}", handle.job_id, str(status))
    message = ""
    job = getattr(handle, "_job", None)
    if job is not None:
        try:
            message = job.status().error_message or ""
        except Exception:
            pass
    tail = ""
    for _ in range(30):  # the last lines arrive shortly after the job ends
        try:
            lines = handle.logs(max_lines=_LOG_TAIL)
        except Exception:
            lines = ()
        tail = "\n".join(lines)
        last = stderr_tail(message)
        if lines and (not last or last in tail):
            break
        time.sleep(0.1)
    raise RemoteJobFailed(f"remote job {handle.job_id} {status}: {message or 'no error message'}", handle.job_id, str(status), tail)


def _resource_config(resources: Any):
    from fray.types import ResourceConfig

    if isinstance(resources, ResourceConfig):
        return resources
    from mbuild.runners.fray.submission import resource_config

    return resource_config(resources)


__all__ = ["RemoteCallable", "RemoteJobFailed", "remote", "run_remote_call", "shutdown_remote_clients"]
