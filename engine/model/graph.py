"""The target graph reachable from a request: nodes in dependency order, with cycles reported."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mbuild.errors import CycleError
from mbuild.labels import Label
from mbuild.model.loader import Loader
from mbuild.model.targets import Node, Target


@dataclass
class Graph:
    """Nodes in dependency order (every node after all of its dependencies)."""

    order: list[Node]
    index: dict[Label, int]
    deps: list[list[int]]  # node index -> indices of its direct dependencies
    rdeps: list[list[int]]  # node index -> indices of its direct dependents

    def node(self, label: Label) -> Node:
        return self.order[self.index[label]]


def build_graph(loader: Loader, roots: Iterable[Label]) -> Graph:
    """Load everything reachable from `roots` (and nothing else) and order it, dependencies first."""
    order: list[Node] = []
    index: dict[Label, int] = {}
    state: dict[Label, int] = {}  # 1 = on the stack, 2 = done
    for root in roots:
        if state.get(root) == 2:
            continue
        node = loader.resolve(root)
        stack: list[tuple[Node, list[Label], int]] = [(node, _deps_of(node), 0)]
        state[root] = 1
        while stack:
            node, deps, i = stack[-1]
            if i < len(deps):
                stack[-1] = (node, deps, i + 1)
                dep = deps[i]
                seen = state.get(dep)
                if seen == 2:
                    continue
                if seen == 1:
                    path = [str(n.label) for n, _, _ in stack]
                    start = path.index(str(dep))
                    raise CycleError(path[start:] + [str(dep)])
                child = loader.resolve(dep, referrer=node if isinstance(node, Target) else None)
                state[dep] = 1
                stack.append((child, _deps_of(child), 0))
            else:
                stack.pop()
                state[node.label] = 2
                index[node.label] = len(order)
                order.append(node)
    deps = [[index[d] for d in _deps_of(n)] for n in order]
    rdeps: list[list[int]] = [[] for _ in order]
    for i, ds in enumerate(deps):
        for d in ds:
            rdeps[d].append(i)
    return Graph(order, index, deps, rdeps)


def _deps_of(node: Node) -> list[Label]:
    return node.all_deps() if isinstance(node, Target) else []
