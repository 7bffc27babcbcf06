"""A target as plain data and back, so a later process can rebuild part of a graph without
evaluating its BUILD files (schedule/amend.py).

Only plain targets are written: every configuration value is JSON data of exact types (str, int,
float, bool, None, lists, dicts with str keys: no tuples, dataclasses or other objects, whose
round trip would not be exact), the target asks for no resources, and its rule is bound to a name
in its module. Anything else is `None` here, and a build that needs it loads BUILD files as usual.
Reading back is only ever done when every file the loading read is unchanged (noop.py checks that),
so the target read back is the one the BUILD file would declare again.
"""

from __future__ import annotations

import importlib
from typing import Any

from mbuild.encoding import encode
from mbuild.labels import Label
from mbuild.model.targets import Location, Rule, Target, map_labels

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def is_plain(value: Any) -> bool:
    """JSON data whose decoding gives back exactly `value` (types included)."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if kind is list:
        return all(is_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and is_plain(v) for k, v in value.items())
    return False


class Replayer:
    """Writes targets as plain data and reads them back; remembers where each rule is bound."""

    def __init__(self) -> None:
        self._names: dict[int, str | None] = {}  # id(rule) -> its name in its module
        self._rules: dict[tuple[str, str], Rule] = {}

    def to_plain(self, target: Target) -> list | None:
        """[rule module, rule name, config, deps, outputs, env, tags, BUILD file, line, resumable], or None."""
        if target.in_place or target.resources is not None or not is_plain(target.config) or any(type(t) is not str for t in target.tags):
            return None
        name = self._name_of(target.rule)
        if name is None:
            return None
        deps = {k: map_labels(v, str) for k, v in target.deps.items()}
        loc = target.location
        return [target.rule.module, name, target.config, deps, list(target.outputs), list(target.env), list(target.tags), loc.file, loc.line, target.resumable]

    def from_plain(self, package: str, name: str, data: list) -> Target:
        """The target written by to_plain (raises KeyError/ValueError/TypeError/ImportError on data it did not write)."""
        module, rule_name, config, deps, outputs, env, tags, file, line, resumable = data
        return Target(
            label=Label(package, name),
            rule=self._rule(module, rule_name),
            config=config,
            deps={k: _labels(v) for k, v in deps.items()},
            outputs=tuple(outputs),
            env=tuple(env),
            resources=None,
            tags=tuple(tags),
            location=Location(file, line),
            config_bytes=encode(config, "config"),
            resumable=bool(resumable),
        )

    def _name_of(self, rule: Rule) -> str | None:
        if id(rule) not in self._names:
            found = None
            try:
                for key, value in vars(importlib.import_module(rule.module)).items():
                    if value is rule:
                        found = key
                        break
            except ImportError:
                pass
            self._names[id(rule)] = found
        return self._names[id(rule)]

    def _rule(self, module: str, name: str) -> Rule:
        rule = self._rules.get((module, name))
        if rule is None:
            rule = getattr(importlib.import_module(module), name)
            if not isinstance(rule, Rule):
                raise TypeError(f"{module}.{name} is not a rule")
            self._rules[(module, name)] = rule
        return rule


def _labels(value: Any) -> Any:
    """A dependency structure with its label strings made Labels again (deps hold nothing else)."""
    if value is None:
        return None
    if isinstance(value, str):
        package, _, name = value[2:].partition(":")  # written by str(Label): "//package:name"
        return Label(package, name)
    if isinstance(value, list):
        return [_labels(v) for v in value]
    return {k: _labels(v) for k, v in value.items()}

