"""Where and how targets are declared: `--output location` and `--output build`, as Bazel prints them.

location: `/abs/path/BUILD.py:LINE:COL: <kind> //pkg:name` (a source file: `/abs/path/file:1:1: source file //pkg:file`).
build:    the rule call as it would read in a BUILD file, after a `# /abs/path/BUILD.py:LINE:COL`
          comment line: the attributes given (those differing from the rule's defaults), labels
          absolute, values as Python writes them, so the text can be pasted into a BUILD file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mbuild.labels import Label
from mbuild.model.attrs import Resources
from mbuild.model.targets import Node, SourceFile, Target, map_labels
from mbuild.front.query.attributes import kind_of


def where(node: Node, root: Path) -> str:
    """`/abs/path/BUILD.py:LINE:COL` for a target; `/abs/path/file:1:1` for a source file."""
    if isinstance(node, SourceFile):
        return f"{root / node.relpath}:1:1"
    location = node.location
    return f"{root / location.file}:{location.line}:{location.column}"


def location_line(node: Node, root: Path) -> str:
    return f"{where(node, root)}: {kind_of(node)} {node.label}"


def declaration(node: Node, root: Path) -> list[str]:
    """The lines of `node`'s declaration: a comment saying where, then the rule call."""
    if isinstance(node, SourceFile):
        return [f"# {where(node, root)}", f"# {node.label}: a source file ({node.relpath})", ""]
    lines = [f"# {where(node, root)}", f"{node.rule.kind}(", f"  name = {python_text(node.label.name)},"]
    lines.extend(f"  {key} = {python_text(value)}," for key, value in given_attributes(node))
    return [*lines, ")", ""]


def given_attributes(target: Target) -> list[tuple[str, Any]]:
    """The attributes a BUILD file must give to declare `target`: schema attributes whose value is
    not the default (dependencies as absolute label strings), then tags, resources and env."""
    given: list[tuple[str, Any]] = []
    for key, schema in target.rule.attrs.items():
        if schema.is_dep:
            value = target.deps.get(key)
            if value:  # None, [] and {} are what an omitted dependency attribute holds
                given.append((key, map_labels(value, str)))
        elif schema.mandatory or target.config.get(key) != schema.default:
            given.append((key, target.config.get(key)))
    if target.tags:
        given.append(("tags", list(target.tags)))
    if target.resources is not None and target.resources != target.rule.resources:
        given.append(("resources", _fields_set(target.resources)))
    own_env = [name for name in target.env if name not in target.rule.env]
    if own_env:
        given.append(("env", own_env))
    return given


def _fields_set(resources: Resources) -> dict[str, Any]:
    defaults = Resources()
    return {f.name: getattr(resources, f.name) for f in dataclasses.fields(resources) if getattr(resources, f.name) != getattr(defaults, f.name)}


def python_text(value: Any) -> str:
    """`value` as Python source: strings in double quotes (as Bazel prints them), labels as their
    absolute strings, anything else as repr writes it."""
    if isinstance(value, Label):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a Python string literal
    if isinstance(value, list):
        return "[" + ", ".join(python_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_text(k)}: {python_text(v)}" for k, v in value.items()) + "}"
    return repr(value)
