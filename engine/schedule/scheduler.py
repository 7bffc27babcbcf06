"""The scheduler: walk the graph in dependency order, key each action once its inputs are known,
answer hits from the cache, and run misses concurrently on a Runner (the local worker pool, or
fray for remote-tagged actions).

Early cutoff falls out of the keys: a dependent's key holds its dependencies' *output* digests, so
a dependency that reruns and produces identical bytes leaves its dependents' keys (and hits) as
they were. A result whose bytes turn out missing or corrupt when they are needed is dropped and
its action reruns, never served.

This module is over 400 lines because it is one state machine (waiting → running/blocked → hit,
ran, failed, skipped) whose transitions read best together; what is not a transition lives
beside it (status.py, summary.py, settings.py, outputs.py; keys and explanations in keys/, the
lookup in rebuild/, running in runners/).
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import queue
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mbuild.action.services import Services
from mbuild.action.spec import ActionSpec, Busy, ExecConfig, Failed, Input, InputUnavailable, Ran
from mbuild.errors import BlobUnavailableError, InPlaceChanged, MbuildError, OutputPathTaken
from mbuild.events import ActionEvent, Console, EventsFile, TransferProgress, progress_record
from mbuild.keys.action_key import KeyParts, file_input, key_parts, tree_input
from mbuild.keys.codeprint import CodePrinter
from mbuild.keys.dists import Distributions
from mbuild.labels import Label
from mbuild.leases import LEASE_LOST_EXIT_CODE
from mbuild.leases.guarded import RemoteLeaseError
from mbuild.model.graph import Graph
from mbuild.model.reads import unrecorded
from mbuild.model.targets import SourceFile, Target, map_labels
from mbuild.model.workspace import CACHE_NOTE, Workspace, claim_directory
from mbuild.rebuild.lookup import lookup, lookup_one
from mbuild.runners.base import OnDone, Runner
from mbuild.runners.local import LocalRunner
from mbuild.runners.pool import WorkerDied
from mbuild.schedule.explanations import LabelRecords
from mbuild.schedule.outputs import Materializer
from mbuild.schedule.settings import remote_config
from mbuild.schedule.status import EVENT_STATUS, RESOLVED, RETRY_MAX, BuildOptions, BuildResult, NodeStatus, Prior, State
from mbuild.schedule.summary import summarize
from mbuild.stores.inplace.store import PlaceConfig
from mbuild.stores.results import ActionResult

_MAX_RERUNS = 2  # times an action reruns because a dependency's stored bytes went bad


@dataclasses.dataclass(frozen=True)
class _Report:
    """What a running action reported (action/progress.py), queued for the scheduler's thread."""

    record: dict


class Scheduler:
    def __init__(
        self, workspace: Workspace, graph: Graph, requested: list[Label], options: BuildOptions, console: Console | None = None,
        services: Services | None = None, prior: Prior | None = None, local_runner: Callable[[OnDone], Runner] | None = None,
        check_hit: Callable[[Target, str, ActionResult], bool] | None = None,
    ):
        """`local_runner(on_done)` makes the Runner for actions that are not remote-tagged (default:
        the worker pool); `check_hit(target, key, result)` may refuse a cached result whose outputs
        live outside the cache and are gone (the Python step front's in-place outputs): the entry is
        dropped (not in dry runs) and the action runs."""
        self.ws = workspace
        self.graph = graph
        self.requested = set(requested)
        self.options = options
        self.console = console or Console()
        self.status = [NodeStatus() for _ in graph.order]
        self.pending = [len(d) for d in graph.deps]
        self.ready: list[int] = []
        self.running: dict[int, tuple[Runner, Any]] = {}  # node -> (its runner, the runner's handle)
        self.done: queue.Queue = queue.Queue()
        self.stopping = False
        on_done: OnDone = lambda tag, outcome, exc, source: self.done.put((tag, outcome, exc, source))
        on_report = lambda tag, record: self.done.put(_Report(record))
        self.local = local_runner(on_done) if local_runner is not None else LocalRunner(options.jobs, on_done, on_report)
        self.check_hit = check_hit
        self.keyed: dict[str, int] = {}  # running actions by key: where their reports go
        self.workers: dict[int, int] = {}  # action -> the local worker slot that runs it (trace rows)
        self.began: dict[int, float] = {}  # action -> when it was submitted (time.time(), trace spans)
        self.trace = options.trace  # --profile: spans of lookups, actions and transfers
        self.fray: Runner | None = None  # made when the first remote-tagged action runs
        claim_directory(workspace.cache_dir, CACHE_NOTE)
        self.services = services or Services()  # this process's open stores
        self.services.reports = lambda record: self.done.put(_Report(record))  # actions on this process's threads (fray local)
        self.cas, self.db = self.services.stores(str(workspace.cache_dir))
        if self.db.read_only:
            self.console.error(f"warning: the local cache {workspace.relpath(workspace.cache_dir)} is read-only: cached results are served, nothing new is recorded")
        self.codeprinter = CodePrinter(workspace.root, Distributions(None if self.db.read_only else workspace.cache_dir))
        self.records = LabelRecords(workspace.root, self.db, self.cas, self.codeprinter)
        self.remote_config = remote_config(workspace, options)
        self.build_id = uuid.uuid4().hex  # the build's processes share what they learn about the remote under it
        self.remote = None
        if self.remote_config is not None:
            from mbuild.stores.remote import RemoteCache

            health = self.db.remote_health(self.remote_config.url, self.build_id)
            self.remote = RemoteCache(self.remote_config, on_warning=self._warn_once, on_progress=TransferProgress(say=self.console.error), health=health)
        self.remote_queue: list[int] = []  # local misses waiting for one batched remote lookup
        self.worker_requests = 0  # remote requests made by workers and jobs
        self.warned: set[str] = set()
        self.changed_places: set[str] = set()  # keys whose in-place output changed: no need to ask the remote
        lease = workspace.settings.lease
        shared = self.remote_config is not None and self.remote_config.upload  # leases where results are published
        self.exec_config = ExecConfig(
            str(workspace.root), str(workspace.cache_dir), lease_ttl=lease.ttl, lease_renew=lease.renew,
            leases=self.remote_config.url.rstrip("/") + "/leases" if shared else "",
            storage_options=self.remote_config.storage_options if shared else {},
            remote=self.remote_config, build=self.build_id, trace=self.trace is not None,
            places=PlaceConfig(workspace.inplace_prefix, dict(workspace.settings.outputs.options)),
        )
        self.places = self.services.places(self.exec_config)  # lists in-place outputs to check their hits
        self.timers: list[tuple[float, int]] = []  # (when, node): another look at an action held elsewhere
        os.environ["MBUILD_BUILDER_PID"] = str(os.getpid())  # what fault injection (crash tests) kills
        self.events = EventsFile(options.events)
        self.outputs: dict[Label, Path] = {}
        self.materializer = Materializer(workspace, self.cas, self.remote, self.db, self.console.line)
        self.prior = prior or Prior({}, [])  # an amending build: what it knows already
        self.actions = sum(isinstance(n, Target) for n in graph.order) + len(self.prior.untouched)
        self.finished = 0
        self.env_values = os.environ

    # --- driving ---------------------------------------------------------------------------------

    def run(self) -> BuildResult:
        start = time.monotonic()
        interrupted = False
        try:
            self._hash_sources()
            self._take_prior()
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
                if isinstance(item, _Report):
                    self._report(item.record)
                else:
                    self._handle(*item)
        except KeyboardInterrupt:
            interrupted = True
            self.console.error(f"\nInterrupted: stopping {len(self.running)} running action(s); nothing partial is cached.")
            for runner, handle in list(self.running.values()):
                runner.cancel(handle)
        finally:
            for runner in (self.local, self.fray):
                if runner is not None:
                    runner.close(kill=interrupted)
            self.services.reports = None
            self._save_label_records()
            self.db.sync()
        return self._finish(time.monotonic() - start, interrupted)

    def _take_prior(self) -> None:
        """An amending build: what is known stands, and is reported as the hits it is."""
        if self.events.on:
            for label, key in self.prior.untouched:
                self.events.write(ActionEvent(str(label), key, EVENT_STATUS[State.HIT], 0.0).record())
        for i, (key, result) in self.prior.known.items():
            st = self.status[i]
            st.state, st.key, st.result, st.digest = State.HIT, key, result, result.tree
            self.events.write(ActionEvent(str(self.graph.order[i].label), key, EVENT_STATUS[State.HIT], 0.0).record())
        self.finished = len(self.prior.untouched) + len(self.prior.known)

    def _hash_sources(self) -> None:
        sources = [(i, n) for i, n in enumerate(self.graph.order) if isinstance(n, SourceFile)]
        if not sources:
            return
        try:
            with unrecorded():  # a source's bytes are an input of its actions, not of the graph (noop.py)
                digests = self.db.source_digests([str(self.ws.root / n.relpath) for _, n in sources])
        except FileNotFoundError as exc:
            raise MbuildError(f"source file disappeared while building: {exc.filename}") from None
        for (i, _), digest in zip(sources, digests):
            self.status[i].digest = digest
            self.status[i].state = State.HIT

    def _visit(self, i: int) -> None:
        node = self.graph.order[i]
        st = self.status[i]
        if isinstance(node, SourceFile) or i in self.prior.known:
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
            st.parts = self._key_parts(node, i)  # those dependencies' output digests unknown (None)
            st.why = self.records.why(node, st.parts)
            self._resolved(i)
            return
        st.parts = self._key_parts(node, i)
        st.key = st.parts.key()
        if self.trace is None:
            result = self._lookup(st.key, node)
        else:
            looking = time.time()
            result = self._lookup(st.key, node)
            self.trace.span("cache lookup", "lookup", looking, time.time(), args={"label": str(node.label), "hit": result is not None})
        if result is not None:
            st.result, st.digest = result, result.tree
            self._settle(i, State.HIT)
            return
        if self.remote is not None and self.remote.available and st.key not in self.changed_places:
            self.remote_queue.append(i)  # asked together with the other misses of this round
            return
        self._miss(i)

    def _remote_lookup(self) -> None:
        """One batched remote lookup for this round's local misses: a hit needs its record valid and
        every blob it names present remotely. Hits are copied into the local cache; their bytes are
        fetched only if someone needs them here (build without the bytes)."""
        batch, self.remote_queue = self.remote_queue, []
        looking = time.time()
        hits = lookup([self.status[i].key for i in batch], self.db, self.remote, self._corrupt, self.places)
        if self.trace is not None:
            self.trace.span("remote cache lookup", "lookup", looking, time.time(), args={"actions": len(batch), "hits": len(hits)})
        self._drop_remote_if_down()
        for i in batch:
            st = self.status[i]
            found = hits.get(st.key)
            if found is not None and self.check_hit is not None and not self.check_hit(self.graph.order[i], st.key, found.result):
                found = None  # its outputs outside the cache are not here: it runs
            if found is None:
                self._miss(i)
                continue
            st.result, st.digest = found.result, found.result.tree
            st.source = "remote" if found.remote else st.source
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
        st.why = self.records.why(node, st.parts)
        if self.options.dry_run:
            st.state = State.WOULD_RUN
            try:
                st.holder = self.services.leases(self.exec_config).holder(st.key)
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

    def _lookup(self, key: str, node: Target | None = None) -> ActionResult | None:
        """A valid result in the local cache (the remote one is asked in batches: _remote_lookup)."""
        found = lookup_one(key, self.db, None, self._corrupt, self.places)
        if found is not None and node is not None and self.check_hit is not None and not self.check_hit(node, key, found.result):
            if not self.options.dry_run:
                self.db.delete_result(key)  # mbuild's own record, naming outputs that are gone
            return None
        return found.result if found is not None else None

    def _corrupt(self, key: str, exc: Exception) -> None:
        if isinstance(exc, InPlaceChanged):  # the remote's record names the same manifest: it is replaced when rebuilt
            self.changed_places.add(key)
            if self.remote is not None:
                self.remote.forget(key, str(exc))
            self.console.line(f"warning: {exc}")
            return
        self.console.line(f"warning: dropping corrupt cache entry {key}: {exc}")

    def _submit(self, i: int, announce: bool = True) -> None:
        """Run an action: remote-tagged ones (they ask for resources) as fray jobs, the rest in the local pool."""
        node: Target = self.graph.order[i]
        st = self.status[i]
        st.state = State.RUNNING
        st.seconds = time.monotonic()
        self.began[i] = time.time()
        if announce:
            self.console.started(str(node.label), self.finished, self.actions, expected=self._expected(node.label))
        if self.remote is not None:
            self._drop_remote_if_down()
        runner = self._fray_runner() if node.runs_on_fray else self.local
        self.keyed[st.key] = i
        self.running[i] = (runner, runner.submit(self._spec(i), self.exec_config, i))

    def _expected(self, label: Label) -> float | None:
        """How long this target's last recorded run took (its previous key's result), for an ETA."""
        prior = self.db.get_label(str(label))
        key = prior.get("key") if prior else None
        result = self.db.valid_result(key) if isinstance(key, str) else None
        seconds = result.meta.get("seconds") if result is not None and isinstance(result.meta, dict) else None
        return float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else None

    def _report(self, record: dict) -> None:
        """A running action's report: progress (shown, and written as an event), its log (for -v), a span."""
        i = self.keyed.get(record.get("key"))
        if i is None or i not in self.running:
            return  # late: the action ended (or it is not this build's)
        label, st = str(self.graph.order[i].label), self.status[i]
        if "worker" in record:
            self.workers[i] = record["worker"]
        if "step" in record:
            elapsed = time.monotonic() - st.seconds
            self.console.progress(label, record, elapsed)
            self.events.write(progress_record(label, st.key, record, elapsed))
        elif "log" in record:
            self.console.follow(label, record["log"], record.get("inode"))
        elif "span" in record and self.trace is not None:
            self.trace.span(record["span"], "action" if record["span"] == label else "phase", record["start"], record["end"], self._row(i), {"label": label})

    def _fray_runner(self) -> Runner:
        if self.fray is None:
            from mbuild.runners.fray.executor import FrayExecutor  # fray (and Iris) load only when a remote-tagged action runs

            settings = self.ws.settings.fray
            self.fray = FrayExecutor(
                self.options.fray_backend or settings.backend,
                controller=settings.controller or None,
                max_jobs=self.options.remote_jobs or settings.remote_jobs,
                retries=settings.retries,
                on_done=lambda tag, outcome, exc, source: self.done.put((tag, outcome, exc, source)),
                lookup=self._lookup_anywhere,
                namespace=self.remote_config.url if self.remote_config else None,
                services=self.services,
                on_progress=lambda tag, record: self.done.put(_Report(record)),
            )
        return self.fray

    def _lookup_anywhere(self, key: str) -> ActionResult | None:
        """A result published by a job: in the local cache, or (a job elsewhere) in the remote one.
        Called from the fray poller thread."""
        found = lookup_one(key, self.db, self.remote, places=self.places)
        return found.result if found is not None else None

    def _row(self, i: int) -> int:
        """The trace row of action i: its local worker's, or one per fray job (named here)."""
        worker = self.workers.get(i)
        if worker is not None:
            self.trace.row(worker, f"worker {worker}")
            return worker
        tid = 1000 + i
        self.trace.row(tid, f"fray job {self.graph.order[i].label}")
        return tid

    def _handle(self, i: int, outcome: Any, exc: BaseException | None, source: str) -> None:
        self.running.pop(i, None)
        st = self.status[i]
        node = self.graph.order[i]
        st.seconds = time.monotonic() - st.seconds
        st.source = source
        self.keyed.pop(st.key, None)
        self.console.ended(str(node.label), getattr(outcome, "log", None))
        if self.trace is not None and i not in self.workers:  # a fray job: its span as the driver saw it
            self.trace.span(str(node.label), "action", self.began.get(i, time.time()), time.time(), self._row(i), {"label": str(node.label), "source": source})
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
        if self.graph.order[i].runs_on_fray:  # each look is a new job: look less often
            st.retry_delay = max(st.retry_delay, 1.0)
        delay = st.retry_delay
        if busy.holder is not None:  # no later than the moment it would go stale
            delay = min(delay, max(0.01, busy.holder.expires - time.time() + 0.01))
        st.retry_delay = min(st.retry_delay * 1.5, RETRY_MAX)
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
            result = self._lookup(st.key, self.graph.order[i])
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
        if state in RESOLVED and node.label in self.requested and not self.options.dry_run and st.result is not None and st.result.place is not None:
            self.console.line(f"{node.label}: in place at {st.result.place.url}")  # nothing to place: it is where it was written
        elif state in RESOLVED and node.label in self.requested and not self.options.dry_run:
            try:
                placing = time.time() if self.trace is not None else 0.0
                self.outputs[node.label], fetched = self.materializer.place(node.label, st.result)
                st.bytes_down += fetched
                if self.trace is not None:
                    self.trace.span("fetch and place output" if fetched else "place output", "transfer", placing, time.time(), args={"label": str(node.label), "bytes": fetched})
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
        self.console.settled(state is State.HIT, self.finished, self.actions)
        self.events.write(
            ActionEvent(
                str(node.label), st.key, EVENT_STATUS[state], st.seconds if state is State.RAN or state is State.FAILED else 0.0,
                st.source, st.log, st.error, st.because, st.bytes_up, st.bytes_down, st.why if state is State.RAN or state is State.FAILED else None,
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

        return key_parts(node, describe, self.codeprinter, self.env_values, self.ws.settings.workspace.salt)

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
            resumable=node.resumable,
            in_place=node.in_place,
        )

    # --- explanations ----------------------------------------------------------------------------

    def _save_label_records(self) -> None:
        """Remember each target's latest key and its parts, so later builds can say what changed."""
        if not self.options.record_labels:
            return
        self.records.save([
            (node, st.parts, st.key, st.digest, "ran" if st.state is State.RAN else "hit")
            for node, st in zip(self.graph.order, self.status)
            if st.state in RESOLVED and st.parts is not None and isinstance(node, Target)
        ])

    # --- the end ---------------------------------------------------------------------------------

    def _finish(self, seconds: float, interrupted: bool) -> BuildResult:
        remote_requests = None
        if self.remote is not None:
            _ = self.remote.available  # reading it reports an outage a worker found that nobody reported yet
            remote_requests = self.remote.stats.requests + self.worker_requests
        result = summarize(
            self.graph.order, self.status, self.outputs, seconds, interrupted, remote_requests, self.graph.deps, self.prior.untouched,
        )
        self.events.write(result.summary.record())
        self.events.close()
        return result
