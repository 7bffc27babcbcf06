"""Mapping an action onto a fray job: its name, its resources, its request, and the RemoteJob
record that follows it through the executor."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from mbuild.action.spec import ActionSpec, ExecConfig
from mbuild.model.attrs import Resources
from mbuild.runners.fray.failures import JobFailure


@dataclass(eq=False)
class RemoteJob:
    """One remote-tagged action on its way through fray: the handle `submit` returns.

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
    run_id: str = ""  # marks this submission's lines in the job's log, and its report
    drain_until: float = 0.0
    failure: JobFailure | None = field(default=None, repr=False)
    progress_read: float = 0.0  # time.monotonic() of the last look at its log for progress
    progress_at: float = 0.0  # the stamp of the last progress report handed on

    @property
    def source(self) -> str:
        return f"fray:{self.backend}/{(self.job_id or self.name).lstrip('/')}"

    @property
    def key(self) -> str:
        return self.spec.key


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


def job_request(job: RemoteJob, entrypoint: Any, retries: int) -> Any:
    """The fray JobRequest for one submission of `job` (imports fray).

    An action's failure is final (no retry by fray); a task lost with a preempted or dead worker
    is retried by Iris inside the job up to `retries` times, and a job lost as a whole is
    submitted again by the executor.
    """
    from fray.types import JobRequest, create_environment

    return JobRequest(
        name=job.name,
        entrypoint=entrypoint,
        resources=resource_config(job.spec.resources),
        environment=create_environment(workspace=job.config.workspace_root, env_vars=declared_env_vars(job.spec)),
        max_retries_failure=0,
        max_retries_preemption=retries,
    )
