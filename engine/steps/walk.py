"""Walking a step's configuration for step references: dataclasses, dicts, lists and tuples, the
shapes Marin configs are made of. One walker for finding (`find`) and one for replacing (`replace`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any


def replace(value: Any, leaf: Callable[[Any], Any | None]) -> Any:
    """`value` with every part for which `leaf(part)` is not None replaced by that result
    (dataclasses are rebuilt with `dataclasses.replace`; other objects are kept as they are)."""
    found = leaf(value)
    if found is not None:
        return found
    if isinstance(value, dict):
        return {k: replace(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [replace(v, leaf) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(replace(v, leaf) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            if not f.init:
                continue
            old = getattr(value, f.name)
            new = replace(old, leaf)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value


def find(value: Any, kind: type) -> Iterator[Any]:
    """Every instance of `kind` inside `value`, in order."""
    if isinstance(value, kind):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from find(v, kind)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from find(v, kind)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from find(getattr(value, f.name), kind)


def lower(value: Any, leaf: Callable[[Any], Any | None]) -> Any:
    """`value` as plain encodable data: like `replace`, but a dataclass holding a replaced part
    becomes `{"__dataclass__": "module.qualname", field: ...}` (it may not accept the replacement)."""
    found = leaf(value)
    if found is not None:
        return found
    if isinstance(value, dict):
        return {k: lower(v, leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return [lower(v, leaf) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        lowered = {k: lower(v, leaf) for k, v in fields.items()}
        if all(lowered[k] is fields[k] for k in fields):
            return value
        cls = type(value)
        return {"__dataclass__": f"{cls.__module__}.{cls.__qualname__}", **lowered}
    return value
