"""Canonical, typed, injective encoding of configuration values: the bytes an action key hashes.

Every value is a one-byte type tag followed by a self-delimiting payload, so distinct values
(of any types, at any nesting) never share an encoding, and `("ab", "c")` never equals
`("a", "bc")`. Dict entries and set members are sorted by their encoding, so order does not
matter. Values without a deterministic encoding (functions, arbitrary objects whose repr holds
an address, mixed-type sets, absolute paths) are refused with an `EncodingError` naming where
in the value they sit.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from enum import Enum
from pathlib import PurePath
from typing import Any

from .errors import EncodingError
from .labels import Label

_MAX_DEPTH = 64
_NAN = struct.pack(">d", math.nan)
_pack_double = struct.Struct(">d").pack


def encode(value: Any, path: str = "value") -> bytes:
    """The canonical bytes of `value`; `path` names it in errors (e.g. "config.optimizer")."""
    out = bytearray()
    _encode(value, out, path, 0)
    return bytes(out)


def _netstring(tag: bytes, data: bytes, out: bytearray) -> None:
    out += tag
    out += str(len(data)).encode()
    out += b":"
    out += data


def _qualname(obj_type: type) -> str:
    return f"{obj_type.__module__}.{obj_type.__qualname__}"


def _encode(value: Any, out: bytearray, path: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise EncodingError(path, f"nested deeper than {_MAX_DEPTH} levels (a cycle?)")
    t = type(value)
    if value is None:
        out += b"N"
    elif t is bool:
        out += b"T" if value else b"F"
    elif t is int:
        out += b"i"
        out += str(value).encode()
        out += b";"
    elif t is float:
        out += b"f"
        out += _NAN if value != value else _pack_double(value)
    elif t is str:
        _netstring(b"s", value.encode("utf-8", "surrogatepass"), out)
    elif t is bytes:
        _netstring(b"b", value, out)
    elif t is list or t is tuple:
        out += b"l"
        out += str(len(value)).encode()
        out += b":"
        for i, item in enumerate(value):
            _encode(item, out, f"{path}[{i}]", depth + 1)
    elif t is dict:
        _encode_dict(value, out, path, depth)
    elif t is set or t is frozenset:
        _encode_set(value, out, path, depth)
    elif t is Label:
        _netstring(b"L", str(value).encode(), out)
    elif isinstance(value, Enum):
        out += b"e"
        _netstring(b"s", _qualname(t).encode(), out)
        _netstring(b"s", value.name.encode(), out)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        out += b"c"
        _netstring(b"s", _qualname(t).encode(), out)
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        _encode_dict(fields, out, path, depth, field_style=True)
    elif isinstance(value, PurePath):
        if value.is_absolute():
            raise EncodingError(path, f"absolute path {str(value)!r} cannot go into a key; use a path relative to the workspace or a dependency")
        _netstring(b"p", value.as_posix().encode(), out)
    elif isinstance(value, (bool, int, float, str, bytes, list, tuple, dict)):
        # Subclasses of builtins (IntEnum is handled above): encode as the base type.
        for base in (bool, int, float, str, bytes, list, tuple, dict):
            if isinstance(value, base):
                _encode(base(value), out, path, depth)
                return
    else:
        raise EncodingError(path, _refusal(value))


def _encode_dict(value: dict, out: bytearray, path: str, depth: int, field_style: bool = False) -> None:
    entries = []
    for k, v in value.items():
        if type(k) not in (str, int, bool) and not isinstance(k, Enum):
            raise EncodingError(path, f"dict key {k!r} of type {type(k).__name__} is not allowed (use str, int, bool or an Enum)")
        key_bytes = encode(k, path)
        sub = f"{path}.{k}" if field_style or type(k) is str else f"{path}[{k!r}]"
        val = bytearray()
        _encode(v, val, sub, depth + 1)
        entries.append((key_bytes, val))
    entries.sort(key=lambda kv: kv[0])
    out += b"d"
    out += str(len(entries)).encode()
    out += b":"
    for key_bytes, val in entries:
        out += key_bytes
        out += val


def _encode_set(value: set | frozenset, out: bytearray, path: str, depth: int) -> None:
    kinds = {type(v) for v in value}
    if len(kinds) > 1:
        names = ", ".join(sorted(k.__name__ for k in kinds))
        raise EncodingError(path, f"a set of mixed types ({names}) has no deterministic order; use a list")
    members = []
    for v in value:
        item = bytearray()
        _encode(v, item, f"{path}{{}}", depth + 1)
        members.append(bytes(item))
    members.sort()
    out += b"S"
    out += str(len(members)).encode()
    out += b":"
    for m in members:
        out += m


def _refusal(value: Any) -> str:
    kind = type(value).__name__
    if callable(value) and not isinstance(value, type):
        name = getattr(value, "__qualname__", kind)
        return (
            f"{kind} {name!r} cannot be encoded deterministically (its identity is a memory address); "
            "pass code as a string 'module:function' instead"
        )
    if isinstance(value, type):
        return f"class {_qualname(value)} is not a value; pass an instance or its name as a string"
    return (
        f"value of type {_qualname(type(value))} has no deterministic encoding; "
        "use str, int, float, bool, None, list, dict, a dataclass or an Enum"
    )
