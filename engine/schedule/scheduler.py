"""The scheduler: walk the graph in dependency order, key each action once its inputs are known,
answer hits from the cache, and run misses concurrently in the worker pool.

Early cutoff falls out of the keys: a dependent's key holds its dependencies' *output* digests, so
a dependency that reruns and produces identical bytes leaves its dependents' keys (and hits) as
they were. A result whose bytes turn out missing or corrupt when they are needed is dropped and
its action reruns, never served.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import queue
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbuild.keys.codeprint import CodePrinter
from mbuild.keys.dists import Distributions
from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.errors import BlobUnavailableError, MbuildError, OutputPathTaken
from mbuild.events import CACHE_HIT, FAILED, RAN, SKIPPED, ActionEvent, Console, EventsFile, Summary, TransferProgress
from mbuild.action.execute import ActionSpec, Busy, ExecConfig, Failed, Input, InputUnavailable, Ran, RemoteLeaseError, lease_store, open_stores, run_action
from mbuild.leases import LEASE_LOST_EXIT_CODE, Holder
from mbuild.model.graph import Graph
from mbuild.keys.action_key import KEY_FORMAT, KeyParts, file_input, tree_input
from mbuild.labels import Label
from mbuild.schedule.outputs import Materializer
from mbuild.model.targets import SourceFile, Target, map_labels
from mbuild.stores.results import ActionResult
from mbuild.runners.pool import WorkerDied, WorkerPool

if TYPE_CHECKING:
    from mbuild.stores.remote import RemoteConfig
from mbuild.model.workspace import CACHE_NOTE, Workspace, check_remote_url, claim_directory

_MAX_RERUNS = 2  # times an action reruns because a dependency's stored bytes went bad
_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0  # seconds between looks at an action another builder holds


class State(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    BLOCKED = "blocked"  # another builder holds its lease: retried until a result or a stale lease
    HIT = "hit"
    RAN = "ran"
    FAILED = "failed"
    SKIPPED = "skipped"
    WOULD_RUN = "would_run"  # dry runs only


_RESOLVED = (State.HIT, State.RAN)


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
    why: str | None = None  # dry runs: why it would run
    holder: Holder | None = None  # who holds its lease, when another builder does
    failed_before: dict | None = None  # dry runs: the recorded failure of this very key, if any
    retry_delay: float = _RETRY_FIRST
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

    @property
    def ok(self) -> bool:
        return self.summary.exit_code == 0


class Scheduler:
    def __init__(self, workspace: Workspace, graph: Graph, requested: list[Label], options: BuildOptions, console: Console | None = None):
        self.ws = workspace
        self.graph = graph
        self.requested = set(requested)
        self.options = options
        self.console = console or Console()
        self.status = [NodeStatus() for _ in graph.order]
        self.pending = [len(d) for d in graph.deps]
        self.ready: list[int] = []
        self.running: dict[int, Any] = {}
        self.done: queue.Queue = queue.Queue()
        self.stopping = False
        self.pool: WorkerPool | None = None
        self.fray: Any = None  # the FrayExecutor, made when the first remote-tagged action runs
        claim_directory(workspace.cache_dir, CACHE_NOTE)
        self.cas, self.db = open_stores(str(workspace.cache_dir))
        if self.db.read_only:
            self.console.error(f"warning: the local cache {workspace.relpath(workspace.cache_dir)} is read-only: cached results are served, nothing new is recorded")
        self.codeprinter = CodePrinter(workspace.root, Distributions(None if self.db.read_only else workspace.cache_dir))
        self.remote_config = remote_config(workspace, options)
        self.build_id = uuid.uuid4().hex  # the build's processes share what they learn about the remote under it
        self.remote = None
        if self.remote_config is not None:
            from mbuild.stores.remote import RemoteStore

            health = self.db.remote_health(self.remote_config.url, self.build_id)
            self.remote = RemoteStore(self.remote_config, on_warning=self._warn_once, on_progress=TransferProgress(self.console.stream), health=health)
        self.remote_queue: list[int] = []  # local misses waiting for one batched remote lookup
        self.worker_requests = 0  # remote requests made by workers and jobs
        self.warned: set[str] = set()
        lease = workspace.settings.lease
        shared = self.remote_config is not None and self.remote_config.upload  # leases where results are published
        self.exec_config = ExecConfig(
            str(workspace.root), str(workspace.cache_dir), lease_ttl=lease.ttl, lease_renew=lease.renew,
            leases=self.remote_config.url.rstrip("/") + "/leases" if shared else "",
            storage_options=self.remote_config.storage_options if shared else {},
            remote=self.remote_config, build=self.build_id,
        )
        self.timers: list[tuple[float, int]] = []  # (when, node): another look at an action held elsewhere
        os.environ["MBUILD_BUILDER_PID"] = str(os.getpid())  # what fault injection (crash tests) kills
        self.events = EventsFile(options.events)
        self.outputs: dict[Label, Path] = {}
        self.materializer = Materializer(workspace, self.cas, self.remote, self.db, self.console.line)
        self.actions = sum(isinstance(n, Target) for n in graph.order)
        self.finished = 0
        self.env_values = os.environ

    # --- driving ---------------------------------------------------------------------------------

    def run(self) -> BuildResult:
        start = time.monotonic()
        interrupted = False
        try:
            self._hash_sources()
            self.ready = [i for i, n in enumerate(self.pending) if n == 0]
            while True:
                while self.ready and not self.stopping:
                    self._visit(self.ready.pop())
                if self.remote_queue:
                    self._remote_lookup()
                    continue
                self._retry_due()
                if self.ready and not self.stopping:
                    continue  # a retried action resolved and released its dependents
                if not self.running and not self.timers:
                    break
                try:
                    item = self.done.get(timeout=max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else None)
                except queue.Empty:
                    continue
                self._handle(*item)
        except KeyboardInterrupt:
            interrupted = True
            self.console.error(f"\nInterrupted: stopping {len(self.running)} running action(s); nothing partial is cached.")
            for i, handle in list(self.running.items()):
                if self.graph.order[i].remote and self.fray is not None:
                    self.fray.cancel(handle)
                elif self.pool is not None:
                    self.pool.cancel(handle)
        finally:
            if self.pool is not None:
                self.pool.close(kill=interrupted)
            if self.fray is not None:
                self.fray.close(kill=interrupted)
            self._save_label_records()
            self.db.sync()
        return self._finish(time.monotonic() - start, interrupted)

    def _hash_sources(self) -> None:
        sources = [(i, n) for i, n in enumerate(self.graph.order) if isinstance(n, SourceFile)]
        if not sources:
            return
        try:
            digests = self.db.source_digests([str(self.ws.root / n.relpath) for _, n in sources])
        except FileNotFoundError as exc:
            raise MbuildError(f"source file disappeared while building: {exc.filename}") from None
        for (i, _), digest in zip(sources, digests):
            self.status[i].digest = digest
            self.status[i].state = State.HIT

    def _visit(self, i: int) -> None:
        node = self.graph.order[i]
        st = self.status[i]
        if isinstance(node, SourceFile):
            self._resolved(i)
            return
        blocked = [d for d in self.graph.deps[i] if self.status[d].state in (State.FAILED, State.SKIPPED)]
        if blocked:
            d = blocked[0]
            root = self.status[d].because or str(self.graph.order[d].label)
            self._settle(i, State.SKIPPED, because=root)
            return
        unknown = [d for d in self.graph.deps[i] if self.status[d].state is State.WOULD_RUN]
        if unknown:
            st.state = State.WOULD_RUN
            st.why = f"dependency {self.graph.order[unknown[0]].label} will run, so its output may change"
            self._resolved(i)
            return
        st.parts = self._key_parts(node, i)
        st.key = st.parts.key()
        result = self._lookup(st.key)
        if result is not None:
            st.result, st.digest = result, result.tree
            self._settle(i, State.HIT)
            return
        if self.remote is not None and self.remote.available:
            self.remote_queue.append(i)  # asked together with the other misses of this round
            return
        self._miss(i)

    def _remote_lookup(self) -> None:
        """One batched remote lookup for this round's local misses: a hit needs its record valid and
        every blob it names present remotely. Hits are copied into the local cache; their bytes are
        fetched only if someone needs them here (build without the bytes)."""
        batch, self.remote_queue = self.remote_queue, []
        hits = self.remote.lookup(list({self.status[i].key for i in batch}))
        self._drop_remote_if_down()
        for i in batch:
            st = self.status[i]
            result = hits.get(st.key)
            if result is None:
                self._miss(i)
                continue
            self.db.put_result(st.key, result)
            st.result, st.digest, st.source = result, result.tree, "remote"
            self._settle(i, State.HIT)

    def _drop_remote_if_down(self) -> None:
        """Once the remote is down (found here or by a worker), actions started from now on use only
        the local cache and local leases."""
        if self.exec_config.remote is not None and not self.remote.available:
            self.exec_config = dataclasses.replace(self.exec_config, remote=None, leases="", storage_options={})

    def _miss(self, i: int) -> None:
        st = self.status[i]
        node = self.graph.order[i]
        if self.stopping:
            return  # a failure stopped the build: nothing new starts
        if self.options.dry_run:
            st.state = State.WOULD_RUN
            st.why = self._explain_miss(node, st.parts)
            try:
                st.holder = lease_store(self.exec_config).holder(st.key)
            except RemoteLeaseError:  # (counted for the remote's breaker)
                st.holder = None
            st.failed_before = self.db.get_failure(st.key)
            self._resolved(i)
            return
        if self.db.read_only:
            self._fail(i, f"cannot run it: the local cache {self.ws.relpath(self.ws.cache_dir)} is read-only (only cached results can be served)", "", None)
            return
        if not self.options.retry_failed and (before := self.db.get_failure(st.key)) is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(before.get("at", 0)))
            self._fail(i, f"failed before with the same key (at {when} on {before.get('host')}): {before.get('error')}", "", before.get("log"))
            return
        self._submit(i)

    def _lookup(self, key: str) -> ActionResult | None:
        return self.db.valid_result(key, lambda k, exc: self.console.line(f"warning: dropping corrupt cache entry {k}: {exc}"))

    def _submit(self, i: int, announce: bool = True) -> None:
        """Run an action: remote-tagged ones (they ask for resources) as fray jobs, the rest in the local pool."""
        node: Target = self.graph.order[i]
        st = self.status[i]
        st.state = State.RUNNING
        st.seconds = time.monotonic()
        if announce:
            self.console.started(str(node.label), self.finished, self.actions)
        if self.remote is not None:
            self._drop_remote_if_down()
        if node.remote:
            self.running[i] = self._fray_executor().submit(self._spec(i), self.exec_config, i)
            return
        if self.pool is None:
            self.pool = WorkerPool(self.options.jobs, lambda task, payload, exc: self.done.put((task.tag, payload, exc, "local")))
        self.running[i] = self.pool.submit(run_action, (self._spec(i), self.exec_config), i)

    def _fray_executor(self):
        if self.fray is None:
            from mbuild.runners.fray.executor import FrayExecutor  # fray (and Iris) load only when a remote-tagged action runs

            settings = self.ws.settings.fray
            self.fray = FrayExecutor(
                self.options.fray_backend or settings.backend,
                controller=settings.controller or None,
                max_jobs=self.options.remote_jobs or settings.remote_jobs,
                retries=settings.retries,
                on_done=lambda job, outcome, exc: self.done.put((job.tag, outcome, exc, job.source)),
                lookup=self._lookup_anywhere,
                namespace=self.remote_config.url if self.remote_config else None,
            )
        return self.fray

    def _lookup_anywhere(self, key: str) -> ActionResult | None:
        """A result published by a job: in the local cache, or (a job elsewhere) in the remote one.
        Called from the fray poller thread."""
        _, db = open_stores(str(self.ws.cache_dir))
        result = db.valid_result(key)
        if result is not None:
            return result
        if self.remote is not None:
            hit = self.remote.lookup([key]).get(key)
            if hit is not None:
                db.put_result(key, hit)
                return hit
        return None

    def _handle(self, i: int, outcome: Any, exc: BaseException | None, source: str) -> None:
        self.running.pop(i, None)
        st = self.status[i]
        node = self.graph.order[i]
        st.seconds = time.monotonic() - st.seconds
        st.source = source
        if isinstance(exc, WorkerDied) and exc.code == LEASE_LOST_EXIT_CODE:
            outcome, exc = Busy(None, fenced=True), None  # fenced: it stopped without publishing
        if exc is not None:
            detail = str(exc) if isinstance(exc, WorkerDied) else str(exc).rstrip()
            error = f"worker failed: {exc}" if isinstance(exc, WorkerDied) else "internal error while running the action"
            self._fail(i, error, detail if not isinstance(exc, WorkerDied) else "", None)
            return
        if isinstance(outcome, Ran):
            st.result, st.digest, st.log = outcome.result, outcome.result.tree, outcome.log or None
            st.bytes_up, st.bytes_down = st.bytes_up + outcome.bytes_up, st.bytes_down + outcome.bytes_down
            self.worker_requests += outcome.requests
            for warning in outcome.warnings:
                self._warn_once(warning)
            if outcome.remote_hit:
                st.source = "remote"
            if outcome.hit:
                self._settle(i, State.HIT)
            else:
                self.console.ran(str(node.label), st.seconds, self.finished + 1, self.actions)
                self._settle(i, State.RAN)
        elif isinstance(outcome, Failed):
            self._fail(i, outcome.error, outcome.detail, outcome.log)
        elif isinstance(outcome, InputUnavailable):
            self._input_unavailable(i, outcome)
        elif isinstance(outcome, Busy):
            self._blocked(i, outcome)

    def _blocked(self, i: int, busy: Busy) -> None:
        """Another builder holds the action: say who, and look again later (for its result, or a stale lease)."""
        st = self.status[i]
        label = self.graph.order[i].label
        if busy.fenced:
            self.console.line(f"lost the lease on {label} (another builder took it over): stopped it, published nothing")
        elif busy.holder is not None and (st.holder is None or st.holder.owner != busy.holder.owner):
            self.console.line(f"waiting for {label}: held by {busy.holder.describe()}")
        st.state, st.holder = State.BLOCKED, busy.holder or st.holder
        if self.graph.order[i].remote:  # each look is a new job: look less often
            st.retry_delay = max(st.retry_delay, 1.0)
        delay = st.retry_delay
        if busy.holder is not None:  # no later than the moment it would go stale
            delay = min(delay, max(0.01, busy.holder.expires - time.time() + 0.01))
        st.retry_delay = min(st.retry_delay * 1.5, _RETRY_MAX)
        heapq.heappush(self.timers, (time.monotonic() + delay, i))

    def _retry_due(self) -> None:
        """Look again at blocked actions whose time has come: a hit if the holder published, else resubmit."""
        now = time.monotonic()
        while self.timers and (self.timers[0][0] <= now or self.stopping):
            _, i = heapq.heappop(self.timers)
            if self.stopping:
                self.status[i].state = State.WAITING
                continue
            st = self.status[i]
            result = self._lookup(st.key)
            if result is not None:
                st.result, st.digest = result, result.tree
                self._settle(i, State.HIT)
            else:
                self._submit(i, announce=False)

    def _input_unavailable(self, i: int, outcome: InputUnavailable) -> None:
        """A dependency's stored bytes went bad: drop its entry, rerun it, then retry this action."""
        producer = self.graph.index[Label(*outcome.label[2:].split(":", 1))]
        pst = self.status[producer]
        self.console.line(f"warning: output of {outcome.label} is unusable ({outcome.reason}); rebuilding it")
        if pst.reruns >= _MAX_RERUNS:
            self._fail(i, f"input {outcome.label} keeps coming back unusable: {outcome.reason}", "", None)
            return
        pst.reruns += 1
        pst.distrust = True
        if pst.key:
            self.db.delete_result(pst.key)
        self.status[i].state = State.WAITING
        pst.waiters.append(i)
        if producer not in self.running:
            self.finished -= 1  # it finishes again
            self._submit(producer)

    def _warn_once(self, message: str) -> None:
        """Print a warning once per kind (the text before its first colon: workers each report an outage)."""
        kind = message.split(":", 1)[0]
        if kind not in self.warned:
            self.warned.add(kind)
            self.console.error(f"warning: {message}")

    def _fail(self, i: int, error: str, detail: str, log: str | None) -> None:
        st = self.status[i]
        st.error, st.log = error, log
        self.console.failed(str(self.graph.order[i].label), error, detail, log)
        self._settle(i, State.FAILED)
        if not self.options.keep_going:
            if self.running and not self.stopping:
                self.console.line(f"waiting for {len(self.running)} running action(s) to finish (use --keep-going to build everything that does not depend on the failure)")
            self.stopping = True

    def _settle(self, i: int, state: State, because: str | None = None) -> None:
        """A target reached a final state: record it, materialise it if requested, release dependents."""
        st = self.status[i]
        st.state = state
        st.because = because
        node = self.graph.order[i]
        if state in _RESOLVED and node.label in self.requested and not self.options.dry_run:
            try:
                self.outputs[node.label], fetched = self.materializer.place(node.label, st.result)
                st.bytes_down += fetched
            except BlobUnavailableError as exc:
                if st.reruns < _MAX_RERUNS:
                    self.console.line(f"warning: cached output of {node.label} is unusable ({exc.reason}); rebuilding it")
                    st.reruns += 1
                    st.distrust = True
                    self.db.delete_result(st.key)
                    self._submit(i)
                    return
                st.error = str(exc)
                state = st.state = State.FAILED
            except OutputPathTaken as exc:  # something mbuild did not make is in the way: left alone
                st.error = str(exc)
                state = st.state = State.FAILED
        self.finished += 1
        self.events.write(
            ActionEvent(
                str(node.label), st.key, _EVENT_STATUS[state], st.seconds if state is State.RAN or state is State.FAILED else 0.0,
                st.source, st.log, st.error, st.because, st.bytes_up, st.bytes_down,
            ).record()
        )
        self._resolved(i)

    def _resolved(self, i: int) -> None:
        waiters = self.status[i].waiters
        if waiters:
            self.status[i].waiters = []
            self.ready.extend(waiters)
            return
        for r in self.graph.rdeps[i]:
            self.pending[r] -= 1
            if self.pending[r] == 0:
                self.ready.append(r)

    # --- keys and specs --------------------------------------------------------------------------

    def _key_parts(self, node: Target, i: int) -> KeyParts:
        def describe(label: Label) -> list:
            d = self.graph.index[label]
            dep = self.graph.order[d]
            if isinstance(dep, SourceFile):
                return file_input(dep.relpath, self.status[d].digest)
            return tree_input(str(label), self.status[d].digest)

        return KeyParts(
            rule=f"{node.rule.identity}@{node.rule.version}",
            code=self.codeprinter.fingerprint(node.code_modules()),
            config=node.config_bytes,
            outputs=node.outputs,
            inputs={k: map_labels(v, describe) for k, v in node.deps.items()},
            env={name: self.env_values.get(name) for name in node.env},
            salt=self.ws.settings.workspace.salt,
        )

    def _spec(self, i: int) -> ActionSpec:
        node: Target = self.graph.order[i]
        inputs = {}
        for label in node.all_deps():
            d = self.graph.index[label]
            dep, dst = self.graph.order[d], self.status[d]
            if isinstance(dep, SourceFile):
                inputs[str(label)] = Input(str(label), dst.digest, relpath=dep.relpath)
            else:
                inputs[str(label)] = Input(str(label), dst.digest, result=dst.result)
        return ActionSpec(
            key=self.status[i].key,
            label=str(node.label),
            rule=node.rule.identity,
            config=node.config,
            deps={k: map_labels(v, str) for k, v in node.deps.items()},
            inputs=inputs,
            outputs=node.outputs,
            env=self.status[i].parts.env,
            resources=node.resources,
            trust_cache=not self.status[i].distrust,
        )

    # --- explanations ----------------------------------------------------------------------------

    def _explain_miss(self, node: Target, parts: KeyParts) -> str:
        previous = self.db.get_label(str(node.label))
        if previous is None:
            return "never built"
        now = _parts_record(node, parts)
        changes = []
        if previous.get("format", "mbuild-action/1") != now["format"]:
            changes.append(f"key format changed (mbuild upgraded): {previous.get('format', 'mbuild-action/1')} -> {now['format']}")
        if previous.get("salt") != now["salt"]:
            changes.append("workspace salt changed")
        if "python" in previous and previous["python"] != now["python"]:
            changes.append(f"Python {previous['python']} → {now['python']}")
        if "packages" in previous:
            changes.extend(_package_changes(previous["packages"], now["packages"]))
        if previous.get("rule") != now["rule"]:
            changes.append(f"rule changed: {previous.get('rule')} -> {now['rule']}")
        if previous.get("code") != now["code"]:
            before = dict(previous.get("modules", []))
            changed = sorted(m for m, d in now["modules"] if before.get(m) != d) or ["(module set)"]
            changes.append("rule code changed: " + ", ".join(changed))
        for name, (digest, shown) in now["config"].items():
            old = previous.get("config", {}).get(name)
            if old is None or old[0] != digest:
                changes.append(f"config {name!r}: {old[1] if old else '(new)'} -> {shown}")
        for name, digest in now["inputs"].items():
            if previous.get("inputs", {}).get(name) != digest:
                changes.append(f"input {name!r} changed")
        if previous.get("env") != now["env"]:
            changes.append("declared environment changed")
        if previous.get("outputs") != now["outputs"]:
            changes.append("declared outputs changed")
        if not changes:
            return "no cache entry for this key (evicted, or built elsewhere)"
        return "; ".join(changes)

    def _save_label_records(self) -> None:
        """Remember each target's latest key and its parts, so later builds can say what changed."""
        keyed = {
            str(node.label): i
            for i, node in enumerate(self.graph.order)
            if isinstance(node, Target) and self.status[i].state in _RESOLVED and self.status[i].parts is not None
        }
        changed = self.db.changed_labels({label: self.status[i].key for label, i in keyed.items()})
        records = {}
        for label in changed:
            i = keyed[label]
            records[label] = _parts_record(self.graph.order[i], self.status[i].parts) | {"key": self.status[i].key}
        self.db.put_labels(records)

    # --- the end ---------------------------------------------------------------------------------

    def _finish(self, seconds: float, interrupted: bool) -> BuildResult:
        summary = Summary(seconds=seconds)
        failures = []
        statuses = {}
        for i, node in enumerate(self.graph.order):
            if not isinstance(node, Target):
                continue
            st = self.status[i]
            statuses[node.label] = st
            summary.actions += 1
            summary.bytes_up += st.bytes_up
            summary.bytes_down += st.bytes_down
            if st.state is State.RAN:
                summary.ran += 1
                summary.uploads += st.bytes_up > 0
            elif st.state is State.HIT:
                summary.cache_hits += 1
                if st.source == "remote":
                    summary.remote_hits += 1
                else:
                    summary.local_hits += 1
            elif st.state is State.FAILED:
                summary.failed += 1
                failures.append((node.label, st))
            elif st.state is State.SKIPPED:
                summary.skipped += 1
            elif st.state is not State.WOULD_RUN:
                summary.not_started += 1
        if self.remote is not None:
            _ = self.remote.available  # reading it reports an outage a worker found that nobody reported yet
            summary.remote_requests = self.remote.stats.requests + self.worker_requests
        if interrupted:
            summary.exit_code = 130
        elif summary.failed or summary.skipped or summary.not_started:
            summary.exit_code = 1
        summary.failures = [{"label": str(lab), "error": st.error} for lab, st in failures]
        self.events.write(summary.record())
        self.events.close()
        return BuildResult(summary, statuses, self.outputs, failures, interrupted)


_EVENT_STATUS = {State.RAN: RAN, State.HIT: CACHE_HIT, State.FAILED: FAILED, State.SKIPPED: SKIPPED}


def _parts_record(node: Target, parts: KeyParts) -> dict:
    return {
        "salt": digest_bytes(parts.salt.encode()),
        "rule": parts.rule,
        "format": KEY_FORMAT,
        "code": parts.code.digest,
        "modules": [list(p) for p in parts.code.modules],
        "python": parts.code.python,
        "packages": dict(parts.code.packages),
        "config": {k: [digest_bytes(encode(v)), _short(v)] for k, v in node.config.items()},
        "inputs": {k: digest_bytes(encode(v)) for k, v in parts.inputs.items()},
        "env": digest_bytes(encode(parts.env)),
        "outputs": list(parts.outputs),
    }


def _package_changes(before: dict, now: dict) -> list[str]:
    """`jax 0.6.0 → 0.6.1` for each distribution whose version changed, appeared or went."""
    return [
        f"{name} {before.get(name, '(none)')} → {now.get(name, '(none)')}"
        for name in sorted(before.keys() | now.keys())
        if before.get(name) != now.get(name)
    ]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def remote_config(workspace: Workspace, options: BuildOptions) -> RemoteConfig | None:
    """The remote cache to use: WORKSPACE.toml's [remote], overridden by the command line."""
    settings = workspace.settings.remote
    url = settings.url if options.remote_url is None else options.remote_url
    if not url:
        return None
    if options.remote_url:
        check_remote_url(url, "--remote-cache")
    upload = settings.upload if options.remote_upload is None else options.remote_upload
    from mbuild.stores.remote import RemoteConfig

    return RemoteConfig(url, upload=upload, timeout=settings.timeout, max_failures=settings.max_failures, storage_options=dict(settings.options))
