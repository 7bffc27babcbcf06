"""The plan of some targets as `explain` and `aquery` need it: every action of their graph keyed as a
dry run keys it (hits, and would-runs with the output digests of dependencies that would run first
left unknown), without recording anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mbuild.errors import MbuildError
from mbuild.events import Console
from mbuild.front.build import absolute_patterns
from mbuild.labels import Label, PatternKind, parse_pattern
from mbuild.model.graph import Graph, build_graph
from mbuild.model.loader import Loader
from mbuild.model.targets import SourceFile, Target
from mbuild.model.workspace import Workspace
from mbuild.schedule.scheduler import Scheduler
from mbuild.schedule.status import BuildOptions, NodeStatus


@dataclass
class Plan:
    """The graph of the asked targets, what the dry run found for each node, and its scheduler
    (its database, CAS, code printer and per-label records)."""

    graph: Graph
    scheduler: Scheduler

    def status(self, label: Label) -> NodeStatus:
        return self.scheduler.status[self.graph.index[label]]

    def target(self, label: Label) -> Target:
        return self.graph.order[self.graph.index[label]]


def make_plan(ws: Workspace, loader: Loader, labels: Sequence[Label]) -> Plan:
    graph = build_graph(loader, list(labels))
    options = BuildOptions(jobs=1, dry_run=True, record_labels=False)
    scheduler = Scheduler(ws, graph, list(labels), options, Console(quiet=True))
    scheduler.run()
    return Plan(graph, scheduler)


def one_target(ws: Workspace, loader: Loader, text: str, command: str) -> Label:
    """The target a command line names by `text` (relative to the current directory's package)."""
    pattern = parse_pattern(absolute_patterns(ws, [text])[0])
    if pattern.kind is not PatternKind.LABEL:
        raise MbuildError(f"{command} takes one target label, not the pattern {text!r}")
    label = pattern.label
    node = loader.resolve(label, None)
    if isinstance(node, SourceFile):
        raise MbuildError(f"{label} is a source file ({node.relpath}), not a rule target: it has no action to {command}")
    return label
