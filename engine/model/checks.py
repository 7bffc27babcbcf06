"""Checking the values a BUILD file gives a rule's attributes: each error names the target and the
attribute (`//p:x: attribute 'lr' must be a float, got 'fast'`)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from mbuild.errors import LabelError, RuleDefinitionError, did_you_mean
from mbuild.labels import Label, parse_label
from mbuild.model.attrs import Attr
from mbuild.model.fieldtypes import FieldTypeError, check_value


def check_str_list(value: Any, where: str, key: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must be a list of strings, got {value!r}")
    return list(value)


def check_deps(value: Any, schema: Attr, package: str, where: str, key: str) -> Any:
    def one(v: Any, sub: str) -> Label:
        if isinstance(v, Label):
            return v
        try:
            return parse_label(v, package)
        except LabelError as exc:
            raise RuleDefinitionError(f"{where}: attribute {sub!r}: {exc}") from None

    def many(v: Any, sub: str) -> list[Label]:
        if isinstance(v, (str, Label)) or not isinstance(v, (list, tuple)):
            raise RuleDefinitionError(f"{where}: attribute {sub!r} must be a list of labels, got {v!r}")
        return [one(x, sub) for x in v]

    if schema.kind == "label":
        return None if value is None else one(value, key)
    if schema.kind == "label_list":
        return many(value, key)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must be a dict of names to labels, got {value!r}")
    return {k: one(v, f"{key}[{k!r}]") if isinstance(v, (str, Label)) else many(v, f"{key}[{k!r}]") for k, v in value.items()}


_SCALARS: dict[str, tuple[type, ...]] = {"string": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "code": (str,)}


def check_config(value: Any, schema: Attr, where: str, key: str) -> Any:
    kind = schema.kind

    def fail(expected: str):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must be {expected}, got {type(value).__name__} {value!r}")

    if kind in _SCALARS:
        if value is None and schema.default is None:
            return None
        types_ = _SCALARS[kind]
        if not isinstance(value, types_) or (kind != "bool" and isinstance(value, bool)):
            fail({"string": "a string", "int": "an int", "float": "a number", "bool": "True or False", "code": "a 'module:function' string"}[kind])
        if kind == "float":
            return float(value)
        if kind == "string" and schema.values and value not in schema.values:
            raise RuleDefinitionError(
                f"{where}: attribute {key!r} must be one of {list(schema.values)}, got {value!r}{did_you_mean(value, schema.values)}"
            )
        if kind == "code":
            check_code_ref(value, where, key)
        return value
    if kind == "string_list":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            fail("a list of strings")
        return list(value)
    if kind == "string_dict":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            fail("a dict of strings to strings")
        return dict(value)
    if kind == "value":
        if schema.type is not None and not (value is None and schema.default is None) and not isinstance(value, schema.type):
            fail(f"a {schema.type.__qualname__}")
        try:
            check_value(value, key)
        except FieldTypeError as exc:
            raise RuleDefinitionError(f"{where}: {exc}") from None
        return freeze_check(value)
    raise RuleDefinitionError(f"{where}: attribute {key!r} has unknown kind {kind!r}")


def freeze_check(value: Any) -> Any:
    """Config values are stored as given; dataclass/enum instances must be importable to reach workers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type) or isinstance(value, enum.Enum):
        module = type(value).__module__
        if module.startswith("BUILD:"):
            raise RuleDefinitionError(
                f"{type(value).__qualname__} is defined in a BUILD file; define config classes in an importable module"
            )
    return value


def check_code_ref(value: str, where: str, key: str) -> None:
    module, sep, qualname = value.partition(":")
    if not sep or not module or not qualname or not all(p.isidentifier() for p in module.split(".") + qualname.split(".")):
        raise RuleDefinitionError(f"{where}: attribute {key!r} must name a function as 'package.module:function', got {value!r}")


def check_outputs(outputs: Sequence[str], where: str) -> tuple[str, ...]:
    if isinstance(outputs, str):
        outputs = [outputs]
    seen = set()
    for out in outputs:
        parts = out.rstrip("/").split("/") if isinstance(out, str) else [""]
        if any(p in ("", ".", "..") for p in parts) or out.startswith("/"):
            raise RuleDefinitionError(f"{where}: declared output {out!r} must be a relative path inside the output directory")
        path = "/".join(parts)  # already normal: no empty, "." or ".." parts
        if path in seen:
            raise RuleDefinitionError(f"{where}: output {out!r} declared twice")
        seen.add(path)
    return tuple(outputs)
