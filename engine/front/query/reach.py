"""The part of the target graph a query reaches, numbered as it is met, and traversals over it.

Nodes are small integers so that traversals are set and list operations on ints. Edges are
expanded on demand: `deps(i)` loads the packages a node's dependencies live in, and nothing else
is loaded. Traversals are iterative and tolerate cycles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from mbuild.labels import Label
from mbuild.model.loader import Loader
from mbuild.model.targets import Node, Target

Successors = Callable[[int], Iterable[int]]


class QueryGraph:
    """Targets and source files met so far (`nodes[i]`), and the dependency edges expanded so far."""

    def __init__(self, loader: Loader):
        self.loader = loader
        self.nodes: list[Node] = []
        self.index: dict[Label, int] = {}
        self._deps: list[list[int] | None] = []

    def add(self, node: Node) -> int:
        """The number of `node` (numbering it if it is new)."""
        i = self.index.get(node.label)
        if i is None:
            i = self.index[node.label] = len(self.nodes)
            self.nodes.append(node)
            self._deps.append(None)
        return i

    def id_of(self, label: Label, referrer: Target | None = None) -> int:
        """The number of the target or source file `label` names, loading its package if needed."""
        i = self.index.get(label)
        return i if i is not None else self.add(self.loader.resolve(label, referrer))

    def deps(self, i: int) -> list[int]:
        """Direct dependencies of node `i` (resolving them: errors name the referring target)."""
        deps = self._deps[i]
        if deps is None:
            node = self.nodes[i]
            deps = [self.id_of(d, node) for d in node.all_deps()] if isinstance(node, Target) else []
            self._deps[i] = deps
        return deps

    def known_deps(self, i: int) -> list[int]:
        """Direct dependencies of node `i` that are already numbered; loads nothing (for printing)."""
        deps = self._deps[i]
        if deps is not None:
            return deps
        node = self.nodes[i]
        if not isinstance(node, Target):
            return []
        index = self.index
        return [index[d] for d in node.all_deps() if d in index]


def reach(seeds: Iterable[int], successors: Successors, depth: int | None = None) -> set[int]:
    """Every node within `depth` steps of `seeds` (all reachable ones if depth is None), seeds included."""
    seen = set(seeds)
    frontier = list(seen)
    steps = 0
    while frontier and (depth is None or steps < depth):
        following = []
        for v in frontier:
            for w in successors(v):
                if w not in seen:
                    seen.add(w)
                    following.append(w)
        frontier = following
        steps += 1
    return seen


def reverse(nodes: Iterable[int], successors: Successors) -> dict[int, list[int]]:
    """The reversed edges of the subgraph over `nodes` (edges leaving it are kept, reversed, too)."""
    preds: dict[int, list[int]] = {}
    for v in nodes:
        for w in successors(v):
            preds.setdefault(w, []).append(v)
    return preds


def shortest_path(sources: Sequence[int], targets: set[int] | frozenset[int], successors: Successors) -> list[int]:
    """A shortest path from a source to a target (breadth-first, sources in the order given), or []."""
    for s in sources:
        if s in targets:
            return [s]
    parent: dict[int, int | None] = dict.fromkeys(sources)
    frontier = list(parent)
    while frontier:
        following = []
        for v in frontier:
            for w in successors(v):
                if w in parent:
                    continue
                parent[w] = v
                if w in targets:
                    path = [w]
                    while (p := parent[path[-1]]) is not None:
                        path.append(p)
                    return path[::-1]
                following.append(w)
        frontier = following
    return []
