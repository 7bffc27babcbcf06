"""`StepRunner`: run a Python pipeline's steps through mbuild's scheduler.

Each StepSpec becomes a target of the `run_step` rule (steps/rule.py), so steps share everything
with BUILD-file targets: action keys (with early cutoff), the LMDB action cache, leases with
fencing, failure records, events and the summary. Steps run on threads of this process
(steps/threads.py); one that asks for resources submits a fray job from its thread (`remote`).
Outputs are written in place at `{prefix}/{name}_{key16}` (steps/paths.py); a cached step whose
outputs are gone runs again.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbuild.action.services import Services, process_services
from mbuild.action.spec import ActionSpec
from mbuild.events import Console, Summary
from mbuild.labels import Label
from mbuild.model.targets import Target
from mbuild.model.workspace import Workspace, load_workspace
from mbuild.schedule.scheduler import Scheduler
from mbuild.schedule.status import BuildOptions, State
from mbuild.schedule.uses import record_used
from mbuild.steps import explain, paths
from mbuild.steps.artifact import Artifact, return_type
from mbuild.steps.output_slot import OutputSlot
from mbuild.steps.plan import Plan, expand, make_plan
from mbuild.steps.spec import StepRef, StepRun, StepSpec
from mbuild.steps.threads import StepThreads
from mbuild.stores.gc.lock import shared
from mbuild.stores.results import ActionResult

DEFAULT_BATCH = 1000  # steps read from an iterator at a time (a generator is read lazily; a list is one batch)
_FAILED_BEFORE = "failed before with the same key"


class PreviousTaskFailedError(RuntimeError):
    """With `force_run_failed=False`: a step failed before with the same key, so it is not retried."""


class StepsFailed(RuntimeError):
    """The end of a run with failures: "N step(s) failed"; `failures` holds each step's
    `RuntimeError("Step failed: <name>")`, chained to the step's own exception."""

    def __init__(self, failures: list[RuntimeError]):
        super().__init__(f"{len(failures)} step(s) failed")
        self.failures = failures


@dataclass
class StepOutcome:
    step: StepSpec
    label: Label
    state: str  # hit | ran | failed | skipped | would_run | not_started
    key: str | None
    path: str | None  # None until the key is known (a dry run's steps after one that would run)
    why: str | None = None  # dry runs: why it would run
    error: str | None = None
    exception: BaseException | None = None  # the step's own exception, when it ran and raised


@dataclass
class RunResult:
    outcomes: list[StepOutcome] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)

    def __getitem__(self, step: StepSpec | StepRef) -> StepOutcome:
        step = step.step if isinstance(step, StepRef) else step
        for outcome in self.outcomes:
            if outcome.step.trace_id == step.trace_id:
                return outcome
        raise KeyError(step.name)

    def count(self, state: str) -> int:
        return sum(o.state == state for o in self.outcomes)


class StepRunner:
    """Runs StepSpecs (see the module docstring). `prefix`: where outputs go (default
    $MBUILD_PREFIX, else `<workspace>/mbuild-steps`); `workspace`: a directory in it (default: the
    current one); `remote_cache`: a remote cache URL ("" none); `fray`: the backend for steps with
    resources (default: [fray] of WORKSPACE.toml); `adopt_marin`: a step whose directory Marin
    already finished (`.executor_status` SUCCESS, e.g. at its `override_output_path`) is taken as
    done instead of recomputed."""

    def __init__(
        self, *, prefix: str | os.PathLike | None = None, workspace: Workspace | Path | None = None, events: Path | None = None,
        console: Console | None = None, remote_cache: str = "", fray: str | None = None, services: Services | None = None,
        batch: int = DEFAULT_BATCH, adopt_marin: bool = False,
    ):
        self.ws = workspace if isinstance(workspace, Workspace) else load_workspace(workspace)
        env_prefix = os.environ.get("MBUILD_PREFIX")
        self.prefix = os.fspath(prefix) if prefix is not None else env_prefix or str(self.ws.root / "mbuild-steps")
        self.events, self.console, self.remote_cache = events, console or Console(), remote_cache
        self.fray = (fray or self.ws.settings.fray.backend, self.ws.settings.fray.controller or None)
        self.services = services or process_services()  # one LMDB open per process, shared by runners
        self.batch = max(1, batch)
        self.adopt_marin = adopt_marin
        self.keys: dict[str, str] = {}  # trace_id -> action key, as steps are keyed

    # -- paths
    def path_for(self, step: StepSpec, key: str) -> str:
        if step.override_output_path is not None:
            return step.override_output_path
        return paths.output_path(step.output_path_prefix or self.prefix, step.name, key)

    def output_path(self, step: StepSpec | StepRef) -> str:
        """A step's output directory, once a run has keyed it."""
        step = step.step if isinstance(step, StepRef) else step
        key = self.keys.get(step.trace_id)
        if key is None:
            return step.output_path  # raises StepPathUnknown, unless overridden
        return self.path_for(step, key)

    def load(self, step: StepSpec | StepRef) -> Any:
        """A step's value, once a run has keyed it: a typed artifact as its annotated type
        (steps/artifact.py), else the JSON value its function returned (None if it was not JSON)."""
        step = step.step if isinstance(step, StepRef) else step
        path = self.output_path(step)
        typed = return_type(step.fn)
        if Artifact.typed(typed):
            return Artifact.load(path, typed)
        record = OutputSlot(path).success()
        return record.get("value") if record else None

    def _wait_for_key(self, plan: Plan, step: StepSpec, timeout: float = 30.0) -> str | None:
        """The path of a step of this run that is not a dependency (a nonblocking reference), once
        the scheduler has keyed it (at once, unless its own dependencies are still running)."""
        if step.trace_id not in plan.labels:
            return None
        deadline = time.monotonic() + timeout
        while (key := self.keys.get(step.trace_id)) is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the scheduler's thread keys it
        return self.path_for(step, key) if key is not None else None

    # -- running
    def run(
        self, steps: Iterable[StepSpec | StepRef], *, dry_run: bool = False, force_run_failed: bool = True,
        max_concurrent: int | None = None, keep_going: bool = True,
    ) -> RunResult:
        """Run `steps` and everything they depend on; see the module docstring. Raises
        `StepsFailed` ("N step(s) failed") after every independent branch has finished, or
        `PreviousTaskFailedError` (force_run_failed=False) naming steps that failed before.
        `max_concurrent=None` means the number of cores."""
        jobs = max_concurrent or os.cpu_count() or 1
        if max_concurrent is None:
            self.console.line(f"steps: running at most {jobs} at once (max_concurrent=None: the number of cores)")
        result = RunResult()
        failed: set[str] = set()  # trace ids that failed (or were skipped) in earlier batches
        batches, warned_main = 0, False
        items = iter(steps)
        size = len(steps) if isinstance(steps, (list, tuple, set, frozenset)) else self.batch  # a collection is one batch
        while True:
            batch = [s.step if isinstance(s, StepRef) else s for s in itertools.islice(items, max(1, size))]
            if not batch:
                break
            order = expand(batch)
            blocked = [s for s in order if s.trace_id in failed or any(d.trace_id in failed for d in s.deps)]
            for s in blocked:
                if s.trace_id not in failed:  # a dependency failed in an earlier batch
                    result.outcomes.append(StepOutcome(s, Label("steps", s.name), "skipped", None, None, error="a dependency failed"))
                failed.add(s.trace_id)
            order = [s for s in order if s.trace_id not in failed]
            events = self.events if self.events is None or batches == 0 else self.events.with_name(f".{self.events.name}.{batches}.part")
            main = _main_module(self.ws.root)
            if main is None and not warned_main and any(ref.startswith("__main__:") for st in order for ref in st.code):
                warned_main = True
                self.console.error(
                    f"warning: steps defined in {getattr(sys.modules.get('__main__'), '__file__', 'the __main__ script')} "
                    f"(outside the workspace {self.ws.root}) are not keyed by their code: an edit there does not rerun them"
                )
            self._run_plan(make_plan(order, main), result, dry_run, force_run_failed, jobs, keep_going, events)
            if events is not None and events != self.events:  # a later batch's events follow the first's
                with open(self.events, "ab") as whole:
                    whole.write(events.read_bytes())
                events.unlink()
            batches += 1
            failed.update(o.step.trace_id for o in result.outcomes if o.state in ("failed", "skipped"))
        _count(result)
        if dry_run:
            self._print_plan(result)
        self._raise_failures(result, force_run_failed)
        return result

    def _run_plan(
        self, plan: Plan, result: RunResult, dry_run: bool, force_run_failed: bool, jobs: int, keep_going: bool, events: Path | None,
    ) -> None:
        runs: dict[Label, StepRun] = {}
        vanished: set[Label] = set()

        def prepare(spec: ActionSpec) -> StepRun:
            label = _label(spec.label)
            step = plan.by_label[label]
            self.keys[step.trace_id] = spec.key
            path = self.path_for(step, spec.key)
            if "://" not in path:
                if step.override_output_path is None:
                    paths.make_prefix(step.output_path_prefix or self.prefix)
                os.makedirs(path, exist_ok=True)
            known = {d.trace_id: self.path_for(d, self.keys[d.trace_id]) for d in (*step.deps, *step.nonblocking) if d.trace_id in self.keys}
            lease = (self.ws.settings.lease.ttl, self.ws.settings.lease.renew)
            run = runs[label] = StepRun(step, spec.key, path, known, remote=self.fray, lease=lease, adopt_marin=self.adopt_marin,
                                        resolve=functools.partial(self._wait_for_key, plan))
            return run

        def check_hit(node: Target, key: str, _: ActionResult) -> bool:
            step = plan.by_label[node.label]
            self.keys[step.trace_id] = key
            if paths.outputs_present(self.path_for(step, key)):
                return True
            vanished.add(node.label)
            return False

        options = BuildOptions(
            jobs=jobs, keep_going=keep_going, dry_run=dry_run, events=events, retry_failed=force_run_failed,
            remote_url=self.remote_cache, fray_backend=None,
        )
        started_ns = time.time_ns()
        with shared(self.ws.cache_dir):  # nothing these steps read or build is collected meanwhile
            built = Scheduler(
                self.ws, plan.graph, [], options, self.console, self.services,
                local_runner=lambda on_done: StepThreads(jobs, on_done, prepare, self.services), check_hit=check_hit,
            ).run()
            if not dry_run:
                record_used(self.services.stores(str(self.ws.cache_dir))[1], built, started_ns)
        if built.interrupted:  # Ctrl-C: the scheduler stopped the running steps; the caller's Ctrl-C goes on up
            raise KeyboardInterrupt
        result.summary.seconds += built.summary.seconds
        result.summary.early_cutoff += built.summary.early_cutoff
        seen = {o.step.trace_id for o in result.outcomes}
        for step in plan.steps:
            if step.trace_id in seen:
                continue  # settled in an earlier batch (this one only read it again)
            label = plan.labels[step.trace_id]
            st = built.statuses[label]
            why = st.why
            if label in vanished and st.state is State.WOULD_RUN:
                why = f"its outputs at {self.path_for(step, st.key)} are gone"
            elif st.state is State.WOULD_RUN and why and why.startswith(("hash_attrs", "config 'hash_attrs'")):
                # the engine diffs the encoded hash_attrs; a step's own record names a traced call's fields
                why = self._field_changes(step, label) or why
            run = runs.get(label)
            error = st.error
            if run is not None and run.error is not None:
                error = f"{type(run.error).__name__}: {run.error}"
            result.outcomes.append(StepOutcome(
                step, label, st.state.value if st.state is not State.WAITING else "not_started", st.key,
                self.path_for(step, st.key) if st.key else None, why, error, run.error if run is not None else None,
            ))

    def _field_changes(self, step: StepSpec, label: Label) -> str | None:
        """`hash_attrs` changed: which fields, compared with what the last run of this step left."""
        previous = self.services.stores(str(self.ws.cache_dir))[1].get_label(str(label)) or {}
        if not previous.get("key"):
            return None
        before = explain.load(self.path_for(step, previous["key"]))
        if before is None:
            return None
        found = explain.changes(before, explain.shown(step.hash_attrs))
        return "changed " + ", ".join(found) if found else None

    def _print_plan(self, result: RunResult) -> None:
        for o in result.outcomes:
            if o.state == "hit":
                self.console.error(f"hit        {o.step.name}  ({o.path})")
            elif o.state == "would_run":
                self.console.error(f"would run  {o.step.name}: {o.why}")
            else:
                self.console.error(f"{o.state:<10} {o.step.name}{': ' + o.error if o.error else ''}")

    def _raise_failures(self, result: RunResult, force_run_failed: bool) -> None:
        failures: list[RuntimeError] = []
        previous: list[str] = []
        for o in result.outcomes:
            if o.state != "failed":
                continue
            exc = o.exception
            if exc is None and not force_run_failed and (o.error or "").startswith(_FAILED_BEFORE):
                previous.append(o.step.name)
                continue
            wrapped = RuntimeError(f"Step failed: {o.step.name}" + ("" if exc is not None else f": {o.error}"))
            wrapped.__cause__ = exc
            failures.append(wrapped)
        if previous:
            raise PreviousTaskFailedError(
                f"step(s) failed before with the same key: {', '.join(previous)} (force_run_failed=True runs them again)"
            )
        if failures:
            raise StepsFailed(failures) from failures[0]


def _label(text: str) -> Label:
    package, _, name = text[2:].partition(":")
    return Label(package, name)


def _main_module(root: Path) -> str | None:
    """The importable name of the script run as __main__, when it is a file of the workspace."""
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not file:
        return None
    try:
        rel = Path(file).resolve().relative_to(root.resolve())
    except ValueError:
        return None
    parts = rel.with_suffix("").parts
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None


def _count(result: RunResult) -> None:
    """The summary's counts, from the outcomes (each step once, however many batches read it)."""
    s = result.summary
    s.actions = len(result.outcomes)
    s.ran, s.cache_hits, s.failed, s.skipped = (result.count(x) for x in ("ran", "hit", "failed", "skipped"))
    s.not_started = result.count("not_started")
