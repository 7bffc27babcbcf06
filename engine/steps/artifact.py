"""`Artifact`: a step's typed result kept as a JSON record next to its outputs, never a pickle.

    @dataclass
    class Stats:
        tokens: int
        shards: list[str]

    def tokenize(output_path: str) -> Stats: ...      # a step returning a typed value

A step whose function is annotated to return a dataclass or a pydantic model is run as
`disk_cached(..., save=Artifact.save, load=<Artifact.load of that type>)`: the value is written to
`<output_path>/artifact.json` before the success marker, and a hit loads it back as that type.
Dicts, lists and scalars are JSON already. `Artifact.load(path, Stats)` reads one back anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

FILE = "artifact.json"
FORMAT = 1


class ArtifactError(ValueError):
    """A value that cannot be kept as an artifact, or a record that does not fit the type asked for."""


class Artifact:
    """`save(value, output_path)` and `load(output_path, type)`; see the module docstring."""

    @staticmethod
    def save(value: Any, output_path: str) -> None:
        kind, data = _dump(value)
        cls = type(value)
        record = {"format": FORMAT, "kind": kind, "type": f"{cls.__module__}.{cls.__qualname__}", "value": data}
        Path(output_path).mkdir(parents=True, exist_ok=True)
        Path(output_path, FILE).write_text(json.dumps(record, sort_keys=True, indent=1))

    @staticmethod
    def load(output_path: str, cls: Any = None) -> Any:
        record = json.loads(Path(output_path, FILE).read_text())
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ArtifactError(f"{Path(output_path, FILE)} is not an artifact record (format {FORMAT})")
        return record["value"] if cls is None else _build(cls, record["value"], FILE)

    @staticmethod
    def typed(cls: Any) -> bool:
        """`cls` is a type whose values are kept as artifacts (a dataclass or a pydantic model)."""
        return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or hasattr(cls, "model_validate"))


def return_type(fn: Any) -> Any:
    """The return annotation of the function behind `fn` (a traced step's: its last call's), or None."""
    for _ in range(16):
        calls = getattr(fn, "calls", None)
        if isinstance(calls, tuple) and calls:
            fn = calls[-1].fn
        elif hasattr(fn, "func"):
            fn = fn.func
        elif hasattr(fn, "fn") and not hasattr(fn, "__code__"):
            fn = fn.fn
        else:
            break
    try:
        return typing.get_type_hints(fn).get("return")
    except Exception:  # unresolvable annotations: no typed artifact
        return None


def _dump(value: Any) -> tuple[str, Any]:
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return "pydantic", value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "dataclass", _plain(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"cannot keep a {type(value).__name__} as an artifact (dataclasses, pydantic models and JSON values): {exc}") from None
    return "json", value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _build(cls: Any, data: Any, where: str) -> Any:
    """`data` (JSON) as an instance of the annotation `cls`."""
    origin = typing.get_origin(cls)
    if cls is Any or cls is None or isinstance(cls, typing.TypeVar):
        return data
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(cls)
        if data is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _build(option, data, where)
                except (ArtifactError, TypeError, ValueError):
                    continue
        raise ArtifactError(f"{where}: {data!r} fits none of {cls}")
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(cls) or (Any,)
        items = [_build(args[0] if len(args) == 1 or args[-1] is Ellipsis else args[i], v, f"{where}[{i}]") for i, v in enumerate(data)]
        return origin(items)
    if origin is dict:
        _, vt = typing.get_args(cls) or (Any, Any)
        return {k: _build(vt, v, f"{where}.{k}") for k, v in data.items()}
    if isinstance(cls, type) and hasattr(cls, "model_validate"):
        return cls.model_validate(data)
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: expected an object for {cls.__qualname__}, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _build(hints.get(f.name, Any), data[f.name], f"{where}.{f.name}") for f in dataclasses.fields(cls) if f.init and f.name in data})
    return data
