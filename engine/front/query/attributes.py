"""How a query sees a target: its kind and its attributes, as `kind`, `attr` and `--output json` see them.

Kinds are Bazel's: "source file", or "<rule> rule" ("genrule rule"), prefixed with "remote " for
targets that ask for resources (they run as remote jobs), so `kind(remote, //...)` finds them and
`kind("genrule rule", x)` still matches both. Attributes are the rule's configuration and
dependency attributes plus mbuild's own: name, tags, env, outputs, resources and remote.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mbuild.labels import Label
from mbuild.model.targets import Node, SourceFile, Target


def kind_of(node: Node) -> str:
    if isinstance(node, SourceFile):
        return "source file"
    return f"{'remote ' if node.runs_on_fray else ''}{node.rule.kind} rule"


def attributes(target: Target) -> dict[str, Any]:
    """Every attribute of `target` by name, defaults applied, dependencies as Labels."""
    return {
        "name": target.label.name,
        **target.config,
        **target.deps,
        "tags": list(target.tags),
        "env": list(target.env),
        "outputs": list(target.outputs),
        "resources": target.resources,
        "remote": target.runs_on_fray,
    }


def attr_string(value: Any) -> str:
    """The text `attr()` matches, as in Bazel: labels absolute, lists `[a, b]`, dicts `{k=v, k2=w}`.

    Values print as Python does (True, None, 0.5); a dataclass prints like a dict of its fields.
    """
    if isinstance(value, Label):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(attr_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={attr_string(v)}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return attr_string({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return str(value)

