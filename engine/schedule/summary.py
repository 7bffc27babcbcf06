"""The end of a build: every target's final state counted into the Summary the console prints and
the events file records, and the exit code (0 built, 1 a failure or something not built, 130
interrupted).

Early cutoff is counted here, after the fact: a cache hit with a dependency that ran in this build
(or that was itself cut off) would have run had that dependency's rerun changed its outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mbuild.events import Summary
from mbuild.labels import Label
from mbuild.model.targets import Node, Target
from mbuild.schedule.status import BuildResult, NodeStatus, State


def summarize(
    order: Sequence[Node], status: Sequence[NodeStatus], outputs: dict[Label, Path], seconds: float, interrupted: bool,
    remote_requests: int | None, deps: Sequence[Sequence[int]] | None = None, untouched: Sequence[tuple[Label, str]] = (),
) -> BuildResult:
    """`deps[i]`: the indices in `order` of node i's direct dependencies (for early cutoff);
    `untouched`: targets outside the graph answered as hits (label, key), by an amending build."""
    summary = Summary(seconds=seconds)
    failures = []
    statuses = {label: NodeStatus(state=State.HIT, key=key) for label, key in untouched}
    sources = {}
    for node, st in zip(order, status):
        if not isinstance(node, Target):
            sources[node.label] = st.digest
            continue
        statuses[node.label] = st
    for label, st in statuses.items():
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
            failures.append((label, st))
        elif st.state is State.SKIPPED:
            summary.skipped += 1
        elif st.state is not State.WOULD_RUN:
            summary.not_started += 1
    if remote_requests is not None:
        summary.remote_requests = remote_requests
    if interrupted:
        summary.exit_code = 130
    elif summary.failed or summary.skipped or summary.not_started:
        summary.exit_code = 1
    summary.failures = [{"label": str(lab), "error": st.error} for lab, st in failures]
    if deps is not None:
        summary.early_cutoff, summary.cutoff_at = early_cutoff(order, status, deps)
    return BuildResult(summary, statuses, outputs, failures, interrupted, sources)


def early_cutoff(order: Sequence[Node], status: Sequence[NodeStatus], deps: Sequence[Sequence[int]]) -> tuple[int, list[str]]:
    """How many actions were cache hits only because a dependency that reran reproduced its
    outputs, and the labels of those reruns (where the rebuild stopped). `order` is topological."""
    ran = [st.state is State.RAN for st in status]
    cut = [False] * len(order)
    stopped_at: dict[int, None] = {}
    for i, (node, st) in enumerate(zip(order, status)):
        if st.state is not State.HIT or not isinstance(node, Target):
            continue
        reran = [d for d in deps[i] if ran[d]]
        if reran or any(cut[d] for d in deps[i]):
            cut[i] = True
            stopped_at.update(dict.fromkeys(reran))
    return sum(cut), [str(order[d].label) for d in stopped_at]
