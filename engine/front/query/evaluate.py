"""Evaluating a query: every expression denotes a set of targets (node numbers of a QueryGraph).

Semantics follow Bazel's query reference: `deps(x)` contains x and `deps(x, 0)` is x; `rdeps(u, x)`
is what depends on x within `deps(u)`; `allrdeps(x)` is `rdeps(//... + x, x)`; `somepath` yields
one shortest path or nothing; `kind`, `filter` and `attr` search (unanchored) regular expressions
over the kind, the label and the attribute's text. Only BUILD files are loaded; nothing runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mbuild.errors import did_you_mean
from mbuild.labels import Label, absolute_pattern, parse_pattern
from mbuild.model.loader import Loader
from mbuild.model.targets import SourceFile, Target, iter_labels
from mbuild.model.workspace import BUILD_FILE
from mbuild.front.query.attributes import attr_string, attributes, kind_of
from mbuild.front.query.errors import QueryError
from mbuild.front.query.reach import QueryGraph, reach, reverse, shortest_path
from mbuild.front.query.imports import import_closure
from mbuild.front.query.parser import parse
from mbuild.front.query.syntax import BinOp, Call, Expr, Let, Op, SetOf, Var, Word

Members = frozenset[int]


@dataclass(frozen=True)
class QueryResult:
    """The answer: `members` are node numbers in `graph`, which also knows the edges between them."""

    graph: QueryGraph
    members: Members


def evaluate(query: str | Expr, loader: Loader, offset: str = "") -> QueryResult:
    """Evaluate `query`; relative patterns (`:name`, `foo/...`) are relative to directory `offset`."""
    expr = parse(query) if isinstance(query, str) else query
    graph = QueryGraph(loader)
    return QueryResult(graph, _Evaluator(graph, offset).eval(expr, {}))


class _Evaluator:
    def __init__(self, graph: QueryGraph, offset: str):
        self.graph = graph
        self.loader: Loader = graph.loader
        self.offset = offset
        self.patterns: dict[str, Members] = {}

    def eval(self, expr: Expr, env: dict[str, Members]) -> Members:
        match expr:
            case Word(text):
                return self.pattern(text)
            case Var(name):
                if name not in env:
                    raise QueryError(f"undefined variable ${name}{did_you_mean(name, env)}; bind it with 'let {name} = ... in ...'")
                return env[name]
            case Let(name, value, body):
                return self.eval(body, {**env, name: self.eval(value, env)})
            case BinOp(op, left, right):
                a, b = self.eval(left, env), self.eval(right, env)
                return a | b if op is Op.UNION else a & b if op is Op.INTERSECT else a - b
            case SetOf(words):
                return frozenset().union(*(self.pattern(w) for w in words))
            case Call(name, args):
                values = [a if isinstance(a, (str, int)) else self.eval(a, env) for a in args]
                return frozenset(getattr(self, f"f_{name}")(*values))
        raise TypeError(f"not a query expression: {expr!r}")

    def pattern(self, word: str) -> Members:
        members = self.patterns.get(word)
        if members is None:
            labels = self.loader.expand(parse_pattern(absolute_pattern(word, self.offset)))
            members = self.patterns[word] = frozenset(self.graph.id_of(label) for label in labels)
        return members

    # --- the functions: f_<name>(arguments in signature order) -> node numbers ------------------

    def f_deps(self, x: Members, depth: int | None = None) -> set[int]:
        return reach(x, self.graph.deps, depth)

    def f_rdeps(self, universe: Members, x: Members, depth: int | None = None) -> set[int]:
        within = reach(universe, self.graph.deps)
        preds = reverse(within, self.graph.deps)
        return reach(x & within, lambda v: preds.get(v, ()), depth)

    def f_allrdeps(self, x: Members, depth: int | None = None) -> set[int]:
        return self.f_rdeps(self.pattern("//...") | x, x, depth)

    def f_somepath(self, start: Members, end: Members) -> list[int]:
        nodes = self.graph.nodes
        return shortest_path(sorted(start, key=lambda i: nodes[i].label), end, self.graph.deps)

    def f_allpaths(self, start: Members, end: Members) -> set[int]:
        forward = reach(start, self.graph.deps)
        preds = reverse(forward, self.graph.deps)
        return reach(end & forward, lambda v: preds.get(v, ()))

    def f_kind(self, pattern: str, x: Members) -> list[int]:
        regex, nodes = _regex("kind", pattern), self.graph.nodes
        return [i for i in x if regex.search(kind_of(nodes[i]))]

    def f_filter(self, pattern: str, x: Members) -> list[int]:
        regex, nodes = _regex("filter", pattern), self.graph.nodes
        return [i for i in x if regex.search(str(nodes[i].label))]

    def f_attr(self, name: str, pattern: str, x: Members) -> list[int]:
        regex, nodes = _regex("attr", pattern), self.graph.nodes
        found = []
        for i in x:
            node = nodes[i]
            if isinstance(node, Target):
                attrs = attributes(node)
                if name in attrs and regex.search(attr_string(attrs[name])):
                    found.append(i)
        return found

    def f_labels(self, attr: str, x: Members) -> set[int]:
        found = set()
        for i in x:
            node = self.graph.nodes[i]
            if isinstance(node, Target) and attr in node.deps:
                found.update(self.graph.id_of(label, node) for label in iter_labels(node.deps[attr]))
        return found

    def f_buildfiles(self, x: Members) -> set[int]:
        packages = {self.graph.nodes[i].label.package for i in x}
        return {self.graph.id_of(Label(name, BUILD_FILE)) for name in packages} | self.f_loadfiles(x)

    def f_loadfiles(self, x: Members) -> set[int]:
        found = set()
        for name in {self.graph.nodes[i].label.package for i in x}:
            for path in import_closure(self.loader.package(name).build_file, self.loader.root):
                found.add(self.graph.add(_module_file(path)))
        return found

    def f_rbuildfiles(self, *paths: str) -> set[int]:
        """The BUILD files (of every package in the workspace) that are, or import, one of `paths`."""
        wanted, root, memo = {path.strip("/") for path in paths}, self.loader.root, {}
        found = set()
        for name in self.loader.all_package_names():
            own = f"{name}/{BUILD_FILE}" if name else BUILD_FILE
            try:
                hit = own in wanted or not wanted.isdisjoint(import_closure(root / own, root, memo))
            except SyntaxError as exc:
                raise QueryError(f"rbuildfiles(): {own}:{exc.lineno}: {exc.msg}") from None
            if hit:
                found.add(self.graph.add(SourceFile(Label(name, BUILD_FILE))))
        return found

    def f_some(self, x: Members, count: int = 1) -> list[int]:
        if not x:
            raise QueryError("some(): argument set is empty")
        if count < 1:
            raise QueryError(f"some(): count must be at least 1, got {count}")
        nodes = self.graph.nodes
        return sorted(x, key=lambda i: nodes[i].label)[:count]  # "arbitrary": the first by label, every time

    def f_visible(self, predicate: Members, x: Members) -> Members:
        return x  # mbuild has no visibility: every target is visible to every other

    def f_siblings(self, x: Members) -> set[int]:
        found = set(x)
        for name in {self.graph.nodes[i].label.package for i in x}:
            found.update(self.graph.add(t) for t in self.loader.package(name).targets.values())
        return found

    def f_same_pkg_direct_rdeps(self, x: Members) -> set[int]:
        by_package: dict[str, set[Label]] = {}
        for i in x:
            label = self.graph.nodes[i].label
            by_package.setdefault(label.package, set()).add(label)
        found = set()
        for name, labels in by_package.items():
            found.update(self.graph.add(t) for t in self.loader.package(name).targets.values() if not labels.isdisjoint(t.all_deps()))
        return found


def _module_file(path: str) -> SourceFile:
    """A workspace module as a source file, named as Bazel names `.bzl` files: `//rules:core.py`."""
    directory, _, file = path.rpartition("/")
    return SourceFile(Label(directory, file))


def _regex(function: str, pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise QueryError(f"{function}(): bad regular expression {pattern!r}: {exc}") from None
