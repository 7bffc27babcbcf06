"""Printing a query result: `render(result, format)` for each `--output` format.

Lists are in dependency order, as Bazel prints them: every target before the targets it depends
on, unrelated targets by label, dependencies in the order the BUILD file lists them. Graph-shaped
formats (graph, minrank, maxrank, tree) use the edges between members of the result.
"""

from __future__ import annotations

import orjson

from mbuild.model.targets import Target
from mbuild.front.query.attributes import attributes, kind_of
from mbuild.front.query.declaration import declaration, location_line
from mbuild.front.query.evaluate import QueryResult


def render(result: QueryResult, output: str, ordered: bool = True) -> str:
    """The text `--output <output>` prints for `result` (each line ending in a newline); a key of
    RENDERERS. `ordered=False` (`--order_output=no`) prints `label` output by label instead."""
    lines = (_labels_unordered if output == "label" and not ordered else RENDERERS[output])(result)
    return "".join(f"{line}\n" for line in lines)


def dependency_order(result: QueryResult) -> list[int]:
    """Members, each before everything it depends on (also through non-members the query met).

    The reverse post-order of a depth-first search that starts from members in reverse label order
    and follows dependencies in reverse declaration order, so ties read alphabetically and in
    declaration order. Cycles are cut where the search meets them.
    """
    graph, members = result.graph, result.members
    nodes = graph.nodes
    visited: set[int] = set()
    post: list[int] = []
    for start in sorted(members, key=lambda i: nodes[i].label, reverse=True):
        if start in visited:
            continue
        visited.add(start)
        stack = [(start, reversed(graph.known_deps(start)))]
        while stack:
            v, successors = stack[-1]
            for w in successors:
                if w not in visited:
                    visited.add(w)
                    stack.append((w, reversed(graph.known_deps(w))))
                    break
            else:
                stack.pop()
                post.append(v)
    return [v for v in reversed(post) if v in members]


def member_edges(result: QueryResult) -> dict[int, list[int]]:
    """Each member's direct dependencies that are members too."""
    members, known_deps = result.members, result.graph.known_deps
    return {v: [w for w in known_deps(v) if w in members] for v in members}


def strongly_connected(order: list[int], edges: dict[int, list[int]]) -> list[list[int]]:
    """Tarjan's components (iterative), each emitted after every component it reaches."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    components: list[list[int]] = []
    for root in order:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(edges[root]))]
        while work:
            v, successors = work[-1]
            for w in successors:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    component = []
                    while not component or component[-1] != v:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    components.append(component)
    return components


def ranks(result: QueryResult, order: list[int], longest: bool) -> dict[int, int]:
    """Each member's rank: the shortest (or longest) path to it from a root, a member nothing in the
    result depends on. Members of one cycle share a rank. `order` is the dependency order."""
    edges = member_edges(result)
    components = strongly_connected(order, edges)
    component_of = {v: c for c, component in enumerate(components) for v in component}
    rank: list[int | None] = [None] * len(components)
    for c in reversed(range(len(components))):  # every component after all that reach it
        if rank[c] is None:
            rank[c] = 0
        for v in components[c]:
            for w in edges[v]:
                d, candidate = component_of[w], rank[c] + 1
                if d != c and (rank[d] is None or (candidate > rank[d] if longest else candidate < rank[d])):
                    rank[d] = candidate
    return {v: rank[component_of[v]] for v in edges}


def _labels(result: QueryResult) -> list[str]:
    nodes = result.graph.nodes
    return [str(nodes[v].label) for v in dependency_order(result)]


def _labels_unordered(result: QueryResult) -> list[str]:
    """`--order_output=no`: by label, without working out the dependency order."""
    return sorted(str(result.graph.nodes[v].label) for v in result.members)


def _locations(result: QueryResult) -> list[str]:
    nodes, root = result.graph.nodes, result.graph.loader.root
    return [location_line(nodes[v], root) for v in dependency_order(result)]


def _declarations(result: QueryResult) -> list[str]:
    nodes, root = result.graph.nodes, result.graph.loader.root
    return [line for v in dependency_order(result) for line in declaration(nodes[v], root)]


def _label_kinds(result: QueryResult) -> list[str]:
    nodes = result.graph.nodes
    return [f"{kind_of(nodes[v])} {nodes[v].label}" for v in dependency_order(result)]


def _packages(result: QueryResult) -> list[str]:
    return sorted({result.graph.nodes[v].label.package for v in result.members})


def _json(result: QueryResult) -> list[str]:
    items = []
    for v in dependency_order(result):
        node = result.graph.nodes[v]
        item = {"label": str(node.label), "kind": kind_of(node)}
        if isinstance(node, Target):
            item["location"] = str(node.location)
            item["attributes"] = attributes(node)
            item["deps"] = [str(d) for d in node.all_deps()]
        else:
            item["deps"] = []
        items.append(item)
    # orjson writes dataclasses (resources, config values) as objects; labels and anything else
    # it does not know become strings.
    return [orjson.dumps(items, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode()]


def _ranked(longest: bool):
    def lines(result: QueryResult) -> list[str]:
        order = dependency_order(result)
        rank = ranks(result, order, longest)
        position = {v: k for k, v in enumerate(order)}
        nodes = result.graph.nodes
        return [f"{rank[v]} {nodes[v].label}" for v in sorted(order, key=lambda v: (rank[v], position[v]))]

    return lines


def _graph(result: QueryResult) -> list[str]:
    """GraphViz dot, factored like Bazel's: members with the same dependents and the same
    dependencies are one node whose label lists them all."""
    nodes = result.graph.nodes
    order = dependency_order(result)
    edges = member_edges(result)
    preds: dict[int, list[int]] = {v: [] for v in order}
    for v in order:
        for w in edges[v]:
            preds[w].append(v)
    groups: dict[tuple[frozenset[int], frozenset[int]], list[int]] = {}
    for v in order:
        groups.setdefault((frozenset(preds[v]), frozenset(edges[v])), []).append(v)
    name = {}
    for group in groups.values():
        text = '"' + "\\n".join(str(nodes[v].label) for v in group) + '"'
        name.update(dict.fromkeys(group, text))
    lines = ["digraph mbuild {", "  node [shape=box];"]
    for group in groups.values():
        lines.append(f"  {name[group[0]]}")
        lines.extend(f"  {name[group[0]]} -> {target}" for target in dict.fromkeys(name[w] for w in edges[group[0]]))
    lines.append("}")
    return lines


def _tree(result: QueryResult) -> list[str]:
    """An indented dependency tree from each root; a target shown before is marked (*) and not expanded."""
    nodes = result.graph.nodes
    order = dependency_order(result)
    edges = member_edges(result)
    depended_on = {w for v in order for w in edges[v]}
    lines: list[str] = []
    expanded: set[int] = set()
    for root in [v for v in order if v not in depended_on] + order:  # then what only cycles reach
        if root in expanded:
            continue
        stack = [(root, "", "")]
        while stack:
            v, lead, indent = stack.pop()
            children = edges[v]
            if v in expanded:
                lines.append(f"{lead}{nodes[v].label}{' (*)' if children else ''}")
                continue
            expanded.add(v)
            lines.append(f"{lead}{nodes[v].label}")
            for k in reversed(range(len(children))):
                last = k == len(children) - 1
                stack.append((children[k], indent + ("└── " if last else "├── "), indent + ("    " if last else "│   ")))
    return lines


RENDERERS = {  # one per name in query.FORMATS
    "label": _labels,
    "label_kind": _label_kinds,
    "package": _packages,
    "json": _json,
    "graph": _graph,
    "minrank": _ranked(longest=False),
    "maxrank": _ranked(longest=True),
    "tree": _tree,
    "location": _locations,
    "build": _declarations,
}
