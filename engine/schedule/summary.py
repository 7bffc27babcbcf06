"""The end of a build: every target's final state counted into the Summary the console prints and
the events file records, and the exit code (0 built, 1 a failure or something not built, 130
interrupted)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mbuild.events import Summary
from mbuild.labels import Label
from mbuild.model.targets import Node, Target
from mbuild.schedule.status import BuildResult, NodeStatus, State


def summarize(
    order: Sequence[Node], status: Sequence[NodeStatus], outputs: dict[Label, Path], seconds: float, interrupted: bool,
    remote_requests: int | None, untouched: Sequence[tuple[Label, str]] = (),
) -> BuildResult:
    """`untouched`: targets outside the graph answered as hits (label, key), by an amending build."""
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
    return BuildResult(summary, statuses, outputs, failures, interrupted, sources)
