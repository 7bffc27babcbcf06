"""Query evaluation on random workspaces (written to disk, loaded by the real loader), checked against
an independent reference: fixpoint iterations over the generated edge lists, not the engine's
traversals. Also set-algebra laws, let, the output orders and ranks, and evaluation errors."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbuild.errors import BuildFileError, NoSuchPackageError, NoSuchTargetError
from mbuild.model.loader import Loader
from mbuild.front.query import FORMATS
from mbuild.front.query.errors import QueryError
from mbuild.front.query.evaluate import absolute_pattern, evaluate
from mbuild.front.query.output import RENDERERS, dependency_order, render
from mbuild.front.query.syntax import BinOp, Call, Let, Op, SetOf, Var, Word, unparse
from mbuild.model.workspace import load_workspace

RULES_MODULE = f"query_eval_rules_{os.getpid()}"
RULES = '''
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "main": attr.label(default=None), "named": attr.label_dict(default={}),
             "n": attr.int(default=0), "mode": attr.string(default="fast")}, outputs=["out.txt"])
def node(ctx):
    """Never runs: queries only load BUILD files."""

@rule(attrs={"srcs": attr.label_list(default=[])}, outputs=["out.txt"])
def group(ctx):
    """Never runs."""
'''
PACKAGES = ("a", "a/b", "c")


@dataclass
class Spec:
    """A random workspace: targets (label -> attributes) and source files, with its edges."""

    targets: dict[str, dict] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [*self.targets, *self.files]

    def edges(self, label: str) -> list[str]:
        t = self.targets.get(label)
        if t is None:
            return []
        return [*t.get("deps", []), *t.get("srcs", []), *([t["main"]] if t.get("main") else []), *t.get("named", {}).values()]

    def kind(self, label: str) -> str:
        t = self.targets.get(label)
        return "source file" if t is None else f"{'remote ' if t['remote'] else ''}{t['rule']} rule"


def package_of(label: str) -> str:
    return label[2:].split(":")[0]


@st.composite
def specs(draw, cycles: bool = True) -> Spec:
    packages = PACKAGES[: draw(st.integers(1, 3))]
    spec = Spec()
    n = draw(st.integers(1, 9))
    names = [f"//{draw(st.sampled_from(packages))}:t{i}" for i in range(n)]
    spec.files = [f"//{draw(st.sampled_from(packages))}:f{i}.txt" for i in range(draw(st.integers(0, 3)))]
    for i, label in enumerate(names):
        candidates = (names if cycles else names[:i]) + spec.files
        deps = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=4)) if candidates else []
        t = {"rule": draw(st.sampled_from(["node", "node", "group"])), "remote": draw(st.booleans()), "tags": draw(st.sampled_from([[], ["x"], ["x", "y"]]))}
        if t["rule"] == "group":
            t["srcs"] = deps
        else:
            split = draw(st.integers(0, len(deps)))
            t["main"] = deps[0] if split and draw(st.booleans()) else None
            rest = deps[1:] if t["main"] else deps
            t["named"] = {f"k{j}": d for j, d in enumerate(rest[:split])}
            t["deps"] = rest[split:]
            t["n"], t["mode"] = draw(st.integers(0, 5)), draw(st.sampled_from(["fast", "slow"]))
        spec.targets[label] = t
    return spec


def write(root: Path, spec: Spec) -> None:
    """Write `spec` as a workspace at `root` (replacing the previous one)."""
    for name in ("a", "c"):
        shutil.rmtree(root / name, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "WORKSPACE.toml").write_text("")
    (root / f"{RULES_MODULE}.py").write_text(RULES)
    lines: dict[str, list[str]] = {p: [] for p in PACKAGES if any(package_of(x) == p for x in spec.labels)}
    for label, t in spec.targets.items():
        pkg, name = package_of(label), label.split(":")[1]

        def ref(x):
            return f":{x.split(':')[1]}" if package_of(x) == pkg else x

        args = [f"name={name!r}", f"tags={t['tags']!r}"]
        if t["remote"]:
            args.append("resources={'cpu': 2}")
        if t["rule"] == "group":
            args.append(f"srcs={[ref(d) for d in t['srcs']]!r}")
        else:
            args += [f"deps={[ref(d) for d in t['deps']]!r}", f"main={ref(t['main']) if t['main'] else None!r}",
                     f"named={ {k: ref(v) for k, v in t['named'].items()}!r}", f"n={t['n']}", f"mode={t['mode']!r}"]
        lines[pkg].append(f"{t['rule']}({', '.join(args)})")
    for pkg, calls in lines.items():
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "BUILD.py").write_text(f"from {RULES_MODULE} import node, group\n" + "\n".join(calls) + "\n")
    for f in spec.files:
        (root / package_of(f) / f.split(":")[1]).write_text("data")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("query-eval") / "ws"


def loader_for(root: Path, spec: Spec) -> Loader:
    write(root, spec)
    return Loader(load_workspace(root))


def run(loader: Loader, query) -> set[str]:
    result = evaluate(query, loader)
    return {str(result.graph.nodes[i].label) for i in result.members}


# --- the reference: plain fixpoints over the spec's edge lists ---------------------------------


class Reference:
    def __init__(self, spec: Spec):
        self.spec = spec

    def deps(self, xs, depth=None) -> set[str]:
        result = set(xs)
        for _ in range(len(self.spec.labels) if depth is None else depth):
            result |= {d for v in result for d in self.spec.edges(v)}
        return result

    def rdeps(self, universe, xs, depth=None) -> set[str]:
        return {v for v in self.deps(universe) if self.deps({v}, depth) & set(xs)}

    def allpaths(self, start, end) -> set[str]:
        return {v for v in self.deps(start) if self.deps({v}) & set(end)}

    def distance(self, start, end) -> int | None:
        for d in range(len(self.spec.labels) + 1):
            if self.deps(start, d) & set(end):
                return d
        return None

    def pattern(self, word: str) -> set[str]:
        if word == "//...":
            return set(self.spec.targets)
        if word.endswith("/..."):
            base = word[2:-4]
            return {t for t in self.spec.targets if package_of(t) == base or package_of(t).startswith(base + "/")}
        if word.endswith(":all"):
            return {t for t in self.spec.targets if package_of(t) == word[2:-4]}
        return {word}

    def attr_text(self, label: str, name: str) -> str | None:
        t = self.spec.targets[label]
        values = {"tags": "[" + ", ".join(t["tags"]) + "]", "remote": str(t["remote"]), "name": label.split(":")[1]}
        if t["rule"] == "group":
            values["srcs"] = "[" + ", ".join(t["srcs"]) + "]"
        else:
            values.update(deps="[" + ", ".join(t["deps"]) + "]", main=str(t["main"]), n=str(t["n"]), mode=t["mode"],
                          named="{" + ", ".join(f"{k}={v}" for k, v in t["named"].items()) + "}")
        return values.get(name)

    def eval(self, expr, env=None) -> set[str]:
        env = env or {}
        spec, ev = self.spec, lambda e: self.eval(e, env)
        match expr:
            case Word(text):
                return self.pattern(text)
            case Var(name):
                return env[name]
            case Let(name, value, body):
                return self.eval(body, {**env, name: ev(value)})
            case SetOf(words):
                return set().union(*map(self.pattern, words))
            case BinOp(Op.UNION, l, r):
                return ev(l) | ev(r)
            case BinOp(Op.INTERSECT, l, r):
                return ev(l) & ev(r)
            case BinOp(Op.EXCEPT, l, r):
                return ev(l) - ev(r)
            case Call("deps", (x, *depth)):
                return self.deps(ev(x), *depth)
            case Call("rdeps", (u, x, *depth)):
                return self.rdeps(ev(u), ev(x), *depth)
            case Call("allrdeps", (x, *depth)):
                xs = ev(x)
                return self.rdeps(set(spec.targets) | xs, xs, *depth)
            case Call("allpaths", (s, e)):
                return self.allpaths(ev(s), ev(e))
            case Call("kind", (pattern, x)):
                return {v for v in ev(x) if re.search(pattern, spec.kind(v))}
            case Call("filter", (pattern, x)):
                return {v for v in ev(x) if re.search(pattern, v)}
            case Call("attr", (name, pattern, x)):
                return {v for v in ev(x) if v in spec.targets and (text := self.attr_text(v, name)) is not None and re.search(pattern, text)}
            case Call("labels", (name, x)):
                found = set()
                for v in ev(x) & set(spec.targets):
                    value = spec.targets[v].get(name)
                    found |= set(value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value] if value else [])
                return found
            case Call("siblings", (x,)):
                xs = ev(x)
                return xs | {t for t in spec.targets if package_of(t) in {package_of(v) for v in xs}}
            case Call("same_pkg_direct_rdeps", (x,)):
                xs = ev(x)
                return {t for t in spec.targets if any(package_of(t) == package_of(v) and v in spec.edges(t) for v in xs)}
            case Call("visible", (p, x)):
                ev(p)
                return ev(x)
            case Call("some", (x, *count)):
                xs = ev(x)  # the engine's "arbitrary" member: the first in label order
                return set(sorted(xs, key=lambda v: tuple(v[2:].split(":")))[: count[0] if count else 1])
        raise AssertionError(f"no reference for {expr}")


# --- random expressions over a spec's labels -----------------------------------------------------

KIND_PATTERNS = ["rule", "source file", "remote", "^node rule$", "group", "^remote node"]
FILTER_PATTERNS = ["t1", "^//a", "txt$", "//a/b:", "t[0-4]$"]
ATTR_QUERIES = [("mode", "slow"), ("n", "^[0-2]$"), ("deps", "t1"), ("deps", r"^\[\]$"), ("remote", "True"), ("tags", r"[\[ ]y[,\]]"),
                ("named", "k0="), ("main", "None"), ("srcs", "txt"), ("name", "^t[13]$"), ("nonesuch", "")]


def _expressions(*leaves):
    """Random expressions whose words are placeholders ("#3"): `bind` swaps in a workspace's words."""
    words = st.integers(0, 30).map(lambda k: f"#{k}")
    depths = st.none() | st.integers(0, 3)

    def with_depth(name, *parts):
        return st.tuples(*parts, depths).map(lambda t: Call(name, t[:-1] if t[-1] is None else t))

    def extend(x):
        return st.one_of(
            st.builds(BinOp, st.sampled_from(list(Op)), x, x),
            with_depth("deps", x),
            with_depth("rdeps", x, x),
            with_depth("allrdeps", x),
            st.tuples(x, x).map(lambda t: Call("allpaths", t)),
            st.tuples(st.sampled_from(KIND_PATTERNS), x).map(lambda t: Call("kind", t)),
            st.tuples(st.sampled_from(FILTER_PATTERNS), x).map(lambda t: Call("filter", t)),
            st.tuples(st.sampled_from(ATTR_QUERIES), x).map(lambda t: Call("attr", (*t[0], t[1]))),
            st.tuples(st.sampled_from(["deps", "srcs", "main", "named"]), x).map(lambda t: Call("labels", t)),
            x.map(lambda e: Call("siblings", (e,))),
            x.map(lambda e: Call("same_pkg_direct_rdeps", (e,))),
            st.tuples(x, x).map(lambda t: Call("visible", t)),
            # some() of an empty set is an error: give it a set that is never empty
            st.tuples(x, st.integers(1, 3)).map(lambda t: Call("some", (BinOp(Op.UNION, t[0], Word("//...")), t[1]))),
        )

    return st.recursive(st.one_of(words.map(Word), st.lists(words, max_size=3).map(lambda ws: SetOf(tuple(ws))), *leaves), extend, max_leaves=6)


EXPRESSIONS = _expressions()
LET_BODIES = _expressions(st.just(Var("v")))


def bind(expr, spec: Spec):
    """`expr` with each placeholder word replaced by a label or pattern of `spec`."""
    packages = sorted({package_of(x) for x in spec.labels})
    words = spec.labels + ["//..."] + [f"//{p}:all" for p in packages] + [f"//{p}/..." for p in packages]

    def word(text: str) -> str:
        return words[int(text[1:]) % len(words)] if text.startswith("#") else text

    match expr:
        case Word(text):
            return Word(word(text))
        case SetOf(texts):
            return SetOf(tuple(map(word, texts)))
        case BinOp(op, left, right):
            return BinOp(op, bind(left, spec), bind(right, spec))
        case Call(name, args):
            return Call(name, tuple(a if isinstance(a, (str, int)) else bind(a, spec) for a in args))
    return expr


FAST = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(FAST, max_examples=150)
@given(st.data())
def test_every_function_agrees_with_the_reference(root, data):
    spec = data.draw(specs())
    loader, ref = loader_for(root, spec), Reference(spec)
    for _ in range(4):
        expr = bind(data.draw(EXPRESSIONS), spec)
        assert run(loader, expr) == ref.eval(expr), unparse(expr)
        assert run(loader, unparse(expr)) == ref.eval(expr)  # the printed text means the same
    # buildfiles: each package's BUILD file, and the rule module every BUILD file imports.
    members = ref.eval(expr)
    expected = {f"//{package_of(v)}:BUILD.py" for v in members} | ({f"//:{RULES_MODULE}.py"} if members else set())
    assert run(loader, Call("buildfiles", (expr,))) == expected
    # loadfiles: the modules alone; rbuildfiles: the BUILD files that are, or import, those paths.
    assert run(loader, Call("loadfiles", (expr,))) == ({f"//:{RULES_MODULE}.py"} if members else set())
    every_build_file = {f"//{p}:BUILD.py" for p in {package_of(v) for v in spec.labels}}
    assert run(loader, Call("rbuildfiles", (f"{RULES_MODULE}.py",))) == every_build_file
    assert run(loader, Call("rbuildfiles", ("a/BUILD.py", "c/BUILD.py", "nonesuch.py"))) == every_build_file & {"//a:BUILD.py", "//c:BUILD.py"}


@FAST
@given(st.data())
def test_let_is_substitution(root, data):
    spec = data.draw(specs())
    loader, ref = loader_for(root, spec), Reference(spec)
    value, body = bind(data.draw(EXPRESSIONS), spec), bind(data.draw(LET_BODIES), spec)
    assert run(loader, Let("v", value, body)) == ref.eval(body, {"v": ref.eval(value)})


@FAST
@given(st.data())
def test_somepath_is_a_shortest_path_or_empty_when_there_is_none(root, data):
    spec = data.draw(specs())
    loader, ref = loader_for(root, spec), Reference(spec)
    start = set(data.draw(st.lists(st.sampled_from(spec.labels), min_size=1, max_size=3)))
    end = set(data.draw(st.lists(st.sampled_from(spec.labels), min_size=1, max_size=3)))
    path = run(loader, Call("somepath", (SetOf(tuple(sorted(start))), SetOf(tuple(sorted(end))))))
    distance = ref.distance(start, end)
    if distance is None:
        assert path == set()
        return
    assert len(path) == distance + 1
    first, last = path & start, path & end
    assert first and last and ref.allpaths(first, last) >= path
    # The members form a path: from a start, each step stays inside the set until an end.
    reached = set(first)
    for _ in range(distance):
        reached |= {d for v in reached for d in spec.edges(v) if d in path}
    assert reached == path


@FAST
@given(st.data())
def test_set_algebra_laws(root, data):
    spec = data.draw(specs())
    loader = loader_for(root, spec)
    a, b = bind(data.draw(EXPRESSIONS), spec), bind(data.draw(EXPRESSIONS), spec)
    sa, sb = run(loader, a), run(loader, b)
    assert run(loader, BinOp(Op.EXCEPT, a, b)).isdisjoint(sb)
    assert run(loader, BinOp(Op.UNION, a, b)) == run(loader, BinOp(Op.UNION, b, a)) == sa | sb
    assert run(loader, BinOp(Op.INTERSECT, a, b)) == run(loader, BinOp(Op.INTERSECT, b, a)) == sa & sb
    assert run(loader, BinOp(Op.INTERSECT, BinOp(Op.UNION, a, b), a)) == sa
    assert run(loader, Call("deps", (a,))) >= sa
    assert run(loader, Call("deps", (a, 0))) == sa
    assert run(loader, Call("deps", (Call("deps", (a,)),))) == run(loader, Call("deps", (a,)))


@FAST
@given(specs())
def test_rdeps_of_the_workspace_is_the_inverse_of_deps(root, spec):
    loader = loader_for(root, spec)
    deps = {t: run(loader, f"deps({quote(t)})") for t in spec.targets}
    for x in spec.labels:
        rdeps = run(loader, f"rdeps(//..., {quote(x)})")
        assert rdeps == {y for y in deps if x in deps[y]} | ({x} if x in set().union(*deps.values()) else set())


def quote(label: str) -> str:
    return f'"{label}"'


@FAST
@given(st.data())
def test_dependency_order_puts_every_target_before_what_it_depends_on(root, data):
    spec = data.draw(specs(cycles=False))
    loader, ref = loader_for(root, spec), Reference(spec)
    subset = Call("kind", (data.draw(st.sampled_from(KIND_PATTERNS)), Call("deps", (bind(data.draw(EXPRESSIONS), spec),))))
    result = evaluate(subset, loader)
    order = [str(result.graph.nodes[i].label) for i in dependency_order(result)]
    assert sorted(order) == sorted(set(order)) == sorted(run(loader, subset))
    for i, j in itertools.combinations(range(len(order)), 2):
        assert order[i] not in ref.deps({order[j]}), f"{order[j]} depends on {order[i]} but comes after it"


@FAST
@given(st.data())
def test_ranks_are_shortest_and_longest_paths_from_the_roots(root, data):
    spec = data.draw(specs(cycles=False))
    loader = loader_for(root, spec)
    expr = bind(data.draw(EXPRESSIONS), spec)
    members = run(loader, expr)
    edges = {v: [d for d in spec.edges(v) if d in members] for v in members}
    minrank: dict[str, int] = {}
    frontier, rank = members - {d for ds in edges.values() for d in ds}, 0
    while frontier:
        minrank.update(dict.fromkeys(frontier, rank))
        frontier, rank = {d for v in frontier for d in edges[v]} - set(minrank), rank + 1
    maxrank: dict[str, int] = {}

    def longest(v: str) -> int:
        if v not in maxrank:
            maxrank[v] = max((longest(p) + 1 for p in members if v in edges[p]), default=0)
        return maxrank[v]

    for output, expected in (("minrank", minrank), ("maxrank", {v: longest(v) for v in members})):
        lines = render(evaluate(expr, loader), output).splitlines()
        got = {line.split(" ")[1]: int(line.split(" ")[0]) for line in lines}
        assert got == expected, output
        assert [int(line.split(" ")[0]) for line in lines] == sorted(got.values())


@FAST
@given(st.data())
def test_graph_output_is_the_member_subgraph_factored(root, data):
    spec = data.draw(specs())
    loader = loader_for(root, spec)
    expr = bind(data.draw(EXPRESSIONS), spec)
    members = run(loader, expr)
    lines = render(evaluate(expr, loader), "graph").splitlines()
    assert lines[:2] == ["digraph mbuild {", "  node [shape=box];"] and lines[-1] == "}"
    nodes = [line.strip()[1:-1].split("\\n") for line in lines[2:-1] if "->" not in line]
    assert sorted(itertools.chain(*nodes)) == sorted(members)
    edges = set()
    for line in lines[2:-1]:
        if "->" in line:
            left, right = (side.strip()[1:-1].split("\\n") for side in line.split(" -> "))
            edges |= set(itertools.product(left, right))
    assert edges == {(v, d) for v in members for d in spec.edges(v) if d in members}
    for group in nodes:  # merged members have the same dependencies and dependents
        assert len({(frozenset(e[1] for e in edges if e[0] == v), frozenset(e[0] for e in edges if e[1] == v)) for v in group}) == 1


@FAST
@given(st.data())
def test_tree_shows_every_member_once_and_only_real_edges(root, data):
    spec = data.draw(specs())
    loader = loader_for(root, spec)
    expr = bind(data.draw(EXPRESSIONS), spec)
    members = run(loader, expr)
    lines = render(evaluate(expr, loader), "tree").splitlines()
    parents: list[str] = []
    shown, expanded = set(), []
    for line in lines:
        label = line.lstrip("│├└─ ")
        depth, name = (len(line) - len(label)) // 4, label.removesuffix(" (*)")
        if depth:
            assert name in spec.edges(parents[depth - 1])
        parents[depth:] = [name]
        shown.add(name)
        if any(d in members for d in spec.edges(name)) and not label.endswith(" (*)"):
            expanded.append(name)
    assert shown == members
    assert sorted(expanded) == sorted(v for v in members if any(d in members for d in spec.edges(v)))  # each once


# --- specific semantics on a small fixed workspace -----------------------------------------------


@pytest.fixture
def pipeline(ws) -> Loader:
    ws.write("data/raw.txt", "raw\n")
    ws.build_file("data", """
        step(name="download", deps=["raw.txt"])
        step(name="corpus", deps=[":download"], text="c")
    """)
    ws.build_file("exp", """
        step(name="tok", deps=["//data:corpus"])
        step(name="train", deps=[":tok", "//data:corpus"], resources={"cpu": 4, "accelerator": "v5p-8"}, tags=["big"])
        step(name="eval", deps=[":train", "//data:download"])
    """)
    return Loader(load_workspace(ws.root))


def labels(loader, query, offset=""):
    result = evaluate(query, loader, offset)
    return [str(result.graph.nodes[i].label) for i in dependency_order(result)]


def test_label_order_is_dependency_order(pipeline):
    assert labels(pipeline, "deps(//exp:eval)") == [
        "//exp:eval", "//exp:train", "//exp:tok", "//data:corpus", "//data:download", "//data:raw.txt"]
    assert labels(pipeline, "somepath(//exp:eval, //data:raw.txt)") == ["//exp:eval", "//data:download", "//data:raw.txt"]
    assert labels(pipeline, "somepath(//data:raw.txt, //exp:eval)") == []


def test_depth_zero_is_the_argument(pipeline):
    assert labels(pipeline, "deps(//exp:train, 0)") == ["//exp:train"]
    assert labels(pipeline, "deps(//exp:train, 1)") == ["//exp:train", "//exp:tok", "//data:corpus"]
    assert labels(pipeline, "rdeps(//..., //data:corpus, 1)") == ["//exp:train", "//exp:tok", "//data:corpus"]
    assert labels(pipeline, "rdeps(//exp:tok, //exp:eval)") == []  # outside the universe
    assert labels(pipeline, "allrdeps(//data:download, 1)") == ["//exp:eval", "//data:corpus", "//data:download"]


def test_allrdeps_includes_its_argument_even_if_nothing_uses_it(ws, pipeline):
    ws.write("data/unused.txt", "x")
    assert labels(pipeline, "allrdeps(//data:unused.txt)") == ["//data:unused.txt"]


def test_kinds_and_mbuild_attributes(pipeline):
    assert render(evaluate("//exp:train + //data:raw.txt + //exp:tok", pipeline), "label_kind").splitlines() == [
        "source file //data:raw.txt", "remote step rule //exp:train", "step rule //exp:tok"]
    assert labels(pipeline, "kind(remote, //...)") == labels(pipeline, "attr(remote, True, //...)") == ["//exp:train"]
    assert labels(pipeline, "attr(resources, 'accelerator=v5p-8', //...)") == ["//exp:train"]
    assert labels(pipeline, r"attr(tags, '[\[ ]big[,\]]', //...)") == ["//exp:train"]
    assert labels(pipeline, "attr(text, '^c$', //...)") == ["//data:corpus"]
    assert labels(pipeline, "attr(deps, '//data:download', //...)") == ["//exp:eval", "//data:corpus"]
    assert labels(pipeline, "kind('source file', deps(//exp:eval))") == ["//data:raw.txt"]


def test_buildfiles_siblings_and_same_package_rdeps(ws, pipeline):
    # BUILD files, and the workspace modules they import (`rules` lives outside this workspace).
    assert labels(pipeline, "buildfiles(//exp:tok + //data:raw.txt)") == [f"//:{ws.rules}.py", "//data:BUILD.py", "//exp:BUILD.py"]
    assert labels(pipeline, "siblings(//data:raw.txt)") == ["//data:corpus", "//data:download", "//data:raw.txt"]
    assert labels(pipeline, "same_pkg_direct_rdeps(//exp:tok + //data:download)") == ["//exp:train", "//data:corpus"]
    # No order between these is known without loading more: by label.
    assert labels(pipeline, "labels(deps, //exp:eval)") == ["//data:download", "//exp:train"]


def test_relative_patterns_are_relative_to_the_directory(pipeline):
    assert labels(pipeline, ":tok", offset="exp") == ["//exp:tok"]
    assert labels(pipeline, "tok + :all - :train", offset="exp") == ["//exp:eval", "//exp:tok"]
    assert labels(pipeline, "exp/...") == labels(pipeline, "//exp:all")
    assert labels(pipeline, "...", offset="data") == ["//data:corpus", "//data:download"]
    assert absolute_pattern("b/...:all", "a") == "//a/b/...:all" and absolute_pattern("x.txt", "") == "//:x.txt"


def test_cycles_are_answered(ws):
    ws.build_file("c", 'step(name="a", deps=[":b"])\nstep(name="b", deps=[":c"])\nstep(name="c", deps=[":a", ":d"])\nstep(name="d")\n')
    loader = Loader(load_workspace(ws.root))
    assert set(labels(loader, "deps(//c:a)")) == {"//c:a", "//c:b", "//c:c", "//c:d"}
    assert set(labels(loader, "allpaths(//c:b, //c:a)")) == {"//c:a", "//c:b", "//c:c"}
    ranks = render(evaluate("deps(//c:a)", loader), "maxrank").splitlines()
    assert sorted(ranks) == ["0 //c:a", "0 //c:b", "0 //c:c", "1 //c:d"]  # a cycle shares one rank
    assert "(*)" in render(evaluate("deps(//c:a)", loader), "tree")


def test_json_has_kind_attributes_and_direct_deps(pipeline):
    items = json.loads(render(evaluate("deps(//exp:train, 1) + //data:raw.txt", pipeline), "json"))
    assert [i["label"] for i in items] == ["//data:raw.txt", "//exp:train", "//exp:tok", "//data:corpus"]
    train = items[1]
    assert train["kind"] == "remote step rule" and train["location"] == "exp/BUILD.py:4"
    assert train["deps"] == ["//exp:tok", "//data:corpus"]
    assert train["attributes"]["resources"] == {"cpu": 4, "ram": "1g", "disk": "1g", "accelerator": "v5p-8"}
    assert train["attributes"]["tags"] == ["big"] and train["attributes"]["remote"] is True
    assert items[0] == {"label": "//data:raw.txt", "kind": "source file", "deps": []}


def test_package_graph_and_tree_outputs(pipeline):
    result = evaluate("deps(//exp:eval)", pipeline)
    assert render(result, "package") == "data\nexp\n"
    assert render(result, "tree") == (
        "//exp:eval\n"
        "├── //exp:train\n"
        "│   ├── //exp:tok\n"
        "│   │   └── //data:corpus\n"
        "│   │       └── //data:download\n"
        "│   │           └── //data:raw.txt\n"
        "│   └── //data:corpus (*)\n"
        "└── //data:download (*)\n"
    )
    assert set(FORMATS) == set(RENDERERS)


def test_graph_output_merges_targets_with_the_same_neighbours(ws):
    ws.build_file("g", 'step(name="x", deps=[":a", ":b"])\nstep(name="a", deps=[":c"])\nstep(name="b", deps=[":c"])\nstep(name="c")\n')
    assert render(evaluate("deps(//g:x)", Loader(load_workspace(ws.root))), "graph") == (
        "digraph mbuild {\n"
        "  node [shape=box];\n"
        '  "//g:x"\n'
        '  "//g:x" -> "//g:a\\n//g:b"\n'
        '  "//g:a\\n//g:b"\n'
        '  "//g:a\\n//g:b" -> "//g:c"\n'
        '  "//g:c"\n'
        "}\n"
    )


def test_evaluation_errors_name_what_is_wrong(ws, pipeline):
    with pytest.raises(NoSuchTargetError, match="no target named 'trian' in package '//exp'.*did you mean 'train'"):
        evaluate("deps(//exp:trian)", pipeline)
    with pytest.raises(NoSuchPackageError, match="no package '//nope'"):
        evaluate("//nope:x + //exp:tok", pipeline)
    with pytest.raises(QueryError, match=r"undefined variable \$y"):
        evaluate("let x = //exp:tok in $y", pipeline)
    with pytest.raises(QueryError, match=r"filter\(\): bad regular expression '\('"):
        evaluate("filter('(', //exp:all)", pipeline)
    ws.build_file("broken", 'step(name="x", deps=[":missing"])\n')
    with pytest.raises(NoSuchTargetError, match=r"//broken:x \(broken/BUILD.py:3\) depends on //broken:missing"):
        evaluate("deps(//broken:x)", Loader(load_workspace(ws.root)))
    ws.build_file("bad", "step(name='y', bogus=1)\n")
    with pytest.raises(BuildFileError, match=r"bad/BUILD.py:3: .*unknown attribute 'bogus'"):
        evaluate("//...", Loader(load_workspace(ws.root)))
