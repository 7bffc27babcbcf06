"""What a build knows about each target as it goes (NodeStatus and its State), the options it was
started with, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild.events import CACHE_HIT, FAILED, RAN, SKIPPED, Summary
from mbuild.keys.action_key import KeyParts
from mbuild.labels import Label
from mbuild.leases import Holder
from mbuild.stores.results import ActionResult

if TYPE_CHECKING:  # made only when a build is profiled
    from mbuild.trace import Trace

RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds between looks at an action another builder holds


class State(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    BLOCKED = "blocked"  # another builder holds its lease: retried until a result or a stale lease
    HIT = "hit"
    RAN = "ran"
    FAILED = "failed"
    SKIPPED = "skipped"
    WOULD_RUN = "would_run"  # dry runs only


RESOLVED = (State.HIT, State.RAN)


EVENT_STATUS = {State.RAN: RAN, State.HIT: CACHE_HIT, State.FAILED: FAILED, State.SKIPPED: SKIPPED}


@dataclass
class BuildOptions:
    jobs: int
    keep_going: bool = False
    dry_run: bool = False
    events: Path | None = None
    retry_failed: bool = True  # False: an action that failed before with the same key fails at once
    remote_url: str | None = None  # None: [remote].url; "": no remote cache
    remote_upload: bool | None = None  # None: [remote].upload
    fray_backend: str | None = None  # None: [fray].backend
    remote_jobs: int | None = None  # None: [fray].remote_jobs
    record_labels: bool = True  # False: leave the per-label records as they are (explain, aquery)
    trace: Trace | None = None  # --profile: where the build's spans go (trace.py)


@dataclass
class NodeStatus:
    state: State = State.WAITING
    key: str | None = None
    parts: KeyParts | None = None
    digest: str | None = None  # file digest (sources) or tree digest (targets)
    result: ActionResult | None = None
    seconds: float = 0.0
    source: str = "local"
    log: str | None = None
    error: str | None = None
    because: str | None = None  # the failed dependency this was skipped for
    why: str | None = None  # why it runs or would run (what differs from its last recorded key)
    holder: Holder | None = None  # who holds its lease, when another builder does
    failed_before: dict | None = None  # dry runs: the recorded failure of this very key, if any
    retry_delay: float = RETRY_FIRST
    reruns: int = 0
    distrust: bool = False  # its cached result proved unusable: the next run must really run it
    bytes_up: int = 0
    bytes_down: int = 0
    waiters: list[int] = field(default_factory=list)  # nodes waiting for this one to rerun


@dataclass
class BuildResult:
    summary: Summary
    statuses: dict[Label, NodeStatus]
    outputs: dict[Label, Path]
    failures: list[tuple[Label, NodeStatus]]
    interrupted: bool = False
    sources: dict[Label, str] = field(default_factory=dict)  # source file -> content digest

    @property
    def ok(self) -> bool:
        return self.summary.exit_code == 0


@dataclass
class Prior:
    """What a build amending the last answer (schedule/amend.py) already knows: graph nodes whose
    results stand (index -> key and result), and targets outside the graph answered as hits."""

    known: dict[int, tuple[str, ActionResult]]
    untouched: list[tuple[Label, str]]

