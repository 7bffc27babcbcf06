"""What a runner is given and what it returns: the action spec (everything a worker needs,
independent of the driver's state), the execution settings, and the outcomes of running one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mbuild.leases import Holder
from mbuild.model.attrs import Resources
from mbuild.stores.inplace.store import PlaceConfig
from mbuild.stores.results import ActionResult

if TYPE_CHECKING:  # the remote store (and asyncio) load only when a remote cache is configured
    from mbuild.stores.remote import RemoteConfig


@dataclass(frozen=True)
class Input:
    """One dependency as the action receives it: a source file or a producer's output tree."""

    label: str
    digest: str  # file content digest, or the producer's tree digest
    relpath: str | None = None  # source files: path under the workspace root
    result: ActionResult | None = None  # output trees: the producer's result (what to stage)


@dataclass(frozen=True)
class ActionSpec:
    """Everything a worker needs to run an action, independent of the driver's state."""

    key: str
    label: str
    rule: str  # "module:qualname" of the rule (or its implementation function)
    config: dict[str, Any]
    deps: dict[str, Any]  # attribute -> structure of label strings
    inputs: dict[str, Input]  # label string -> Input
    outputs: tuple[str, ...]
    env: dict[str, str | None]
    resources: Resources | None = None
    trust_cache: bool = True  # False: a cached result proved unusable; run it, whatever entries say
    resumable: bool = False  # gets ctx.work, kept from a failed attempt to the next (action/resume.py)
    in_place: bool = False  # writes its output itself at ctx.out_url (stores/inplace)


@dataclass(frozen=True)
class ExecConfig:
    """Where a worker finds the workspace sources, the cache, and the leases; how it runs actions."""

    workspace_root: str
    cache_dir: str
    capture_output: bool = True  # redirect the action's stdout/stderr into its log file
    leases: str = ""  # lease store: a gs:// / s3:// URL or a directory ("" = the local cache's database)
    lease_ttl: float = 90.0
    lease_renew: float = 30.0
    storage_options: dict = field(default_factory=dict)  # fsspec options for a remote lease store
    in_process: bool = False  # run in the driver's process: a lost lease interrupts the thread, not exit
    fray_job: bool = False  # runs as a fray job: a resumable action works under the in-place prefix (resume.work_root)
    remote: RemoteConfig | None = None  # the shared remote cache, if any
    places: PlaceConfig | None = None  # where in-place outputs go ([outputs] of WORKSPACE.toml)
    build: str = ""  # the build's id: its processes share what they learn about the remote (LocalDB.remote_health)
    trace: bool = False  # the build is profiled (--profile): report each action's phases as spans


@dataclass
class Ran:
    result: ActionResult
    log: str
    hit: bool = False  # found in the cache when the worker got to it (another builder made it)
    remote_hit: bool = False  # ... in the remote cache
    bytes_up: int = 0  # uploaded to the remote cache
    bytes_down: int = 0  # fetched from the remote cache (inputs)
    requests: int = 0  # requests this action made to the remote cache
    warnings: list[str] = field(default_factory=list)  # from the remote cache (e.g. it became unreachable)


@dataclass
class Failed:
    error: str  # one line
    detail: str  # traceback, or the tail of the log
    log: str


@dataclass
class InputUnavailable:
    """An input's bytes are missing or corrupt in the store: its producer must run again."""

    label: str
    reason: str


@dataclass
class Busy:
    """Another builder holds the action's lease (or took it from us: `fenced`). Try again later."""

    holder: Holder | None
    fenced: bool = False


@dataclass
class Produced:
    """An action ran and its outputs are in the local CAS and tree cache, not yet published."""

    result: ActionResult
    log: str
    bytes_down: int = 0  # inputs fetched from the remote cache


Outcome = Ran | Failed | InputUnavailable | Busy
