"""From StepSpecs to the engine's graph: expand dependencies, de-duplicate identical steps (same
trace_id), find cycles (named), label each step, and make each a target of the `run_step` rule."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mbuild.encoding import encode
from mbuild.errors import CycleError, EncodingError
from mbuild.labels import Label
from mbuild.model.graph import Graph
from mbuild.model.targets import Location
from mbuild.steps.rule import MANIFEST, StepTarget, run_step
from mbuild.steps.spec import StepDefinitionError, StepSpec

PACKAGE = "steps"  # steps are labelled //steps:<name>
OUTPUTS = (MANIFEST,)
_BAD = re.compile(r"[^A-Za-z0-9_\-.+=,@~/]+")


def expand(roots: Iterable[StepSpec]) -> list[StepSpec]:
    """Every step reachable from `roots`, each once, dependencies first; a cycle is an error naming it.
    The walk is by object (a cycle has no trace id), then identical steps (equal trace ids) are one."""
    order: list[StepSpec] = []
    done: set[int] = set()
    for root in roots:
        if not isinstance(root, StepSpec):
            raise StepDefinitionError(f"StepRunner.run takes StepSpecs (or StepRefs), got {root!r}")
        if id(root) not in done:
            _visit(root, order, done)
    unique: dict[str, StepSpec] = {}
    for step in order:
        unique.setdefault(step.trace_id, step)
    return list(unique.values())


def _visit(root: StepSpec, order: list[StepSpec], done: set[int]) -> None:
    on_stack: dict[int, int] = {id(root): 0}  # id -> position in the stack
    stack: list[tuple[StepSpec, int]] = [(root, 0)]
    while stack:
        step, i = stack[-1]
        children = (*step.deps, *step.nonblocking)
        if i < len(children):
            stack[-1] = (step, i + 1)
            child = children[i]
            if id(child) in on_stack:
                cycle = [s.name for s, _ in stack[on_stack[id(child)]:]] + [child.name]
                raise CycleError(cycle)
            if id(child) in done:
                continue
            on_stack[id(child)] = len(stack)
            stack.append((child, 0))
        else:
            stack.pop()
            on_stack.pop(id(step), None)
            done.add(id(step))
            order.append(step)


@dataclass
class Plan:
    """The steps in dependency order, their labels and targets, and the graph the scheduler walks."""

    steps: list[StepSpec]
    labels: dict[str, Label]  # trace_id -> label
    by_label: dict[Label, StepSpec]
    graph: Graph


def label_names(steps: list[StepSpec]) -> dict[str, str]:
    """Each step's label name: its name, or `name@<trace id>` when several steps share the name."""
    count: dict[str, int] = {}
    for s in steps:
        count[s.name] = count.get(s.name, 0) + 1
    names = {}
    for s in steps:
        base = _BAD.sub("_", s.name.strip("/")) or "step"
        base = "/".join(p if p not in (".", "..") else "_" for p in base.split("/") if p)
        names[s.trace_id] = base if count[s.name] == 1 else f"{base}@{s.trace_id[:8]}"
    return names


def make_plan(steps: list[StepSpec], main_module: str | None = None) -> Plan:
    """`main_module`: the importable name of the script running as `__main__` (its code is keyed
    under that name; None when it is not a module of the workspace)."""
    names = label_names(steps)
    labels = {s.trace_id: Label(PACKAGE, names[s.trace_id]) for s in steps}
    order, index = [], {}
    location = Location("<steps>")
    for s in steps:
        label = labels[s.trace_id]
        config = {
            "step": s.name, "code": list(s.code), "hash_attrs": s.lowered_attrs,
            "nonblocking": sorted(d.trace_id for d in s.nonblocking),
        }
        try:
            config_bytes = encode(config, f"step {s.name!r}")
        except EncodingError as exc:
            raise StepDefinitionError(str(exc)) from None
        modules = tuple(dict.fromkeys(
            m for ref in s.code if (m := ref.partition(":")[0] if not ref.startswith("__main__:") else main_module)
        ))
        node = StepTarget(  # built directly: a step's values were checked when its trace id was computed
            label=label, rule=run_step, config=config, deps={"deps": list(dict.fromkeys(labels[d.trace_id] for d in s.deps))},
            outputs=OUTPUTS, env=tuple(dict.fromkeys(s.env)), resources=None, tags=(), location=location,
            config_bytes=config_bytes, modules=modules,
        )
        index[label] = len(order)
        order.append(node)
    deps = [[index[d] for d in node.all_deps()] for node in order]
    rdeps: list[list[int]] = [[] for _ in order]
    for i, ds in enumerate(deps):
        for d in ds:
            rdeps[d].append(i)
    return Plan(steps, labels, {labels[s.trace_id]: s for s in steps}, Graph(order, index, deps, rdeps))
