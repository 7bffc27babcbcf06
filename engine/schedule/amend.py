"""The last answer, amended: when only source files changed since a request's recorded answer
(noop.py), rebuild just what they reach, without evaluating a BUILD file.

Nothing the loading read has changed (noop.check saw to that), so the graph is the recorded one
and every target is the one its BUILD file would declare again (model/replay.py writes them as
plain data). The sources whose bytes changed, and every target downstream of them, form the
part to rebuild; it runs on the ordinary scheduler with their direct inputs as known results,
so keys, lookups, leases, early cutoff and output checks are those of any build. Everything else
stands as recorded: its records and output trees were checked one by one. The answer is then
recorded again. When a target in the part to rebuild is not plain data, the build takes the
ordinary way.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from mbuild.action.services import Services
from mbuild.events import Console
from mbuild.labels import Label
from mbuild.model.graph import Graph
from mbuild.model.loader import importable
from mbuild.model.replay import Replayer
from mbuild.model.targets import Node, SourceFile
from mbuild.model.workspace import Workspace
from mbuild.rebuild.lookup import lookup_one
from mbuild.schedule.noop import SOURCE, TARGET, Memo, answer, changed_sources, plain_targets, restamp, settled_stamp
from mbuild.schedule.scheduler import Scheduler
from mbuild.schedule.status import BuildOptions, BuildResult, Prior


def amend(
    memo: Memo, ws: Workspace, options: BuildOptions, console: Console | None, services: Services, started: float,
) -> BuildResult | None:
    """Rebuild what the changed sources reach; None when that cannot be done from the record."""
    db = services.stores(str(ws.cache_dir))[1]
    nodes = memo.nodes
    root = str(ws.root)
    changed = changed_sources(memo, root)
    try:
        digests = db.source_digests([os.path.join(root, nodes[i][1]) for i in changed])
    except OSError:
        return None  # a source is gone: the ordinary way says so
    dirty = {i for i, digest in zip(changed, digests) if digest != nodes[i][3]}
    rebuild = _downstream(nodes, dirty) | set(memo.unplaced)
    if not options.dry_run and not db.read_only:
        now = time.time_ns()
        for i, digest in zip(changed, digests):  # touched or rewritten: the new stamp and digest
            nodes[i][2], nodes[i][3] = settled_stamp(os.path.join(root, nodes[i][1]), now), digest
    if not rebuild:
        if changed and not options.dry_run and not db.read_only:  # new stamps to keep (a pure no-op writes nothing)
            db.put_noop(memo.key, orjson.dumps(memo.body))
        return answer(memo, options.events, started)
    part = sorted(rebuild | {d for i in rebuild for d in nodes[i][5]})
    plain = plain_targets(db, memo)
    if plain is None:
        return None
    importable(ws)  # replayed rules and the functions their actions call import workspace modules
    replayer = Replayer()
    order: list[Node] = []
    try:
        for i in part:
            n = nodes[i]
            if n[0] == SOURCE:
                order.append(SourceFile(Label(n[4], n[5])))
            elif plain[i] is None:
                return None  # not plain data: only its BUILD file can say what it is
            else:
                order.append(replayer.from_plain(n[1], n[2], plain[i]))
    except (ImportError, AttributeError, KeyError, ValueError, TypeError):
        return None
    at = {i: k for k, i in enumerate(part)}
    known = {}
    for i in part:
        if i not in rebuild and nodes[i][0] == TARGET:
            found = lookup_one(nodes[i][3], db)
            if found is None:
                return None
            known[at[i]] = (nodes[i][3], found.result)
    graph = _graph(order, [[at[d] for d in nodes[i][5]] if i in rebuild else [] for i in part])
    outputs = {Label(nodes[i][1], nodes[i][2]): Path(dest) for i, dest, *_ in memo.body["outputs"]}
    untouched = [(Label(n[1], n[2]), n[3]) for i, n in enumerate(nodes) if n[0] == TARGET and i not in at]
    requested = [label for label in outputs if label in graph.index and graph.index[label] not in known]
    result = Scheduler(ws, graph, requested, options, console, services, Prior(known, untouched)).run()
    result.outputs = {**outputs, **result.outputs}
    if not options.dry_run and result.ok and not result.interrupted and not db.read_only:
        _record_again(memo, db, graph, part, rebuild, result, root)
    return result


def _downstream(nodes: list[list], dirty: set[int]) -> set[int]:
    """The targets that read a node in `dirty`, directly or through other targets."""
    reach: set[int] = set()
    for i, n in enumerate(nodes):  # nodes are in dependency order
        if n[0] == TARGET and any(d in dirty or d in reach for d in n[5]):
            reach.add(i)
    return reach


def _graph(order: list[Node], deps: list[list[int]]) -> Graph:
    rdeps: list[list[int]] = [[] for _ in order]
    for i, ds in enumerate(deps):
        for d in ds:
            rdeps[d].append(i)
    return Graph(order, {n.label: i for i, n in enumerate(order)}, deps, rdeps)


def _record_again(memo: Memo, db, graph: Graph, part: list[int], rebuild: set[int], result: BuildResult, root: str) -> None:
    """The amended answer becomes the recorded one: new keys and records of the rebuilt targets,
    new stamps of their outputs (None where too fresh; the sources' were noted before)."""
    now = time.time_ns()
    nodes = memo.nodes
    for k, i in enumerate(part):
        if i in rebuild:
            nodes[i][3] = result.statuses[graph.order[k].label].key
    placed = {label: path for label, path in result.outputs.items() if label in graph.index and part[graph.index[label]] in rebuild}
    index = {Label(n[1], n[2]): i for i, n in enumerate(nodes) if n[0] == TARGET}
    if restamp(db, memo.body, sorted(rebuild), index, placed, now):
        db.put_noop(memo.key, orjson.dumps(memo.body))
