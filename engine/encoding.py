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

from mbuild.errors import EncodingError
from mbuild.labels import Label

_MAX_DEPTH = 64
_NAN = struct.pack(">d", math.nan)
_pack_double = struct.Struct(">d").pack


def encode(value: Any, path: str = "value") -> bytes:
    """The canonical bytes of `value`; `path` names it in errors (e.g. "config.optimizer")."""
    out = bytearray()
    try:
        _encode(value, out, 0)
    except _Refused:
        _locate(value, path, 0)  # raises EncodingError naming where the refused part sits
        raise AssertionError("unreachable")  # pragma: no cover
    return bytes(out)


class _Refused(Exception):
    """Raised on the fast path; `encode` then walks the value again to name the culprit."""


def _qualname(obj_type: type) -> str:
    return f"{obj_type.__module__}.{obj_type.__qualname__}"


def _encode(value: Any, out: bytearray, depth: int) -> None:
    t = type(value)
    if t is str:
        b = value.encode("utf-8", "surrogatepass")
        out += b"s%d:" % len(b)
        out += b
    elif t is int:
        out += b"i%d;" % value
    elif value is None:
        out += b"N"
    elif t is bool:
        out += b"T" if value else b"F"
    elif t is float:
        out += b"f"
        out += _NAN if value != value else _pack_double(value)
    elif t is list or t is tuple:
        if depth > _MAX_DEPTH:
            raise _Refused
        out += b"l%d:" % len(value)
        for item in value:
            if type(item) is str:
                b = item.encode("utf-8", "surrogatepass")
                out += b"s%d:" % len(b)
                out += b
            else:
                _encode(item, out, depth + 1)
    elif t is dict:
        _encode_dict(value, out, depth)
    elif t is bytes:
        out += b"b%d:" % len(value)
        out += value
    elif t is set or t is frozenset:
        _encode_set(value, out, depth)
    elif t is Label:
        b = str(value).encode()
        out += b"L%d:" % len(b)
        out += b
    elif isinstance(value, Enum):
        q, n = _qualname(t).encode(), value.name.encode()
        out += b"es%d:%bs%d:%b" % (len(q), q, len(n), n)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        q = _qualname(t).encode()
        out += b"cs%d:" % len(q)
        out += q
        _encode_dict({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, out, depth)
    elif isinstance(value, PurePath):
        if value.is_absolute():
            raise _Refused
        b = value.as_posix().encode()
        out += b"p%d:" % len(b)
        out += b
    elif isinstance(value, (int, float, str, bytes, list, tuple, dict)):
        # Subclasses of builtins (IntEnum is handled above): encode as the base type.
        for base in (int, float, str, bytes, list, tuple, dict):
            if isinstance(value, base):
                _encode(base(value), out, depth)
                return
    else:
        raise _Refused


def _encode_dict(value: dict, out: bytearray, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Refused
    entries = []
    for k, v in value.items():
        tk = type(k)
        if tk is str:
            b = k.encode("utf-8", "surrogatepass")
            key_bytes = b"s%d:%b" % (len(b), b)
        elif tk is int or tk is bool or isinstance(k, Enum):
            key_bytes = bytearray()
            _encode(k, key_bytes, depth)
        else:
            raise _Refused
        val = bytearray()
        _encode(v, val, depth + 1)
        entries.append((bytes(key_bytes), val))
    entries.sort(key=lambda kv: kv[0])
    out += b"d%d:" % len(entries)
    for key_bytes, val in entries:
        out += key_bytes
        out += val


def _encode_set(value: set | frozenset, out: bytearray, depth: int) -> None:
    if len({type(v) for v in value}) > 1 or depth > _MAX_DEPTH:
        raise _Refused
    members = []
    for v in value:
        item = bytearray()
        _encode(v, item, depth + 1)
        members.append(bytes(item))
    members.sort()
    out += b"S%d:" % len(members)
    for m in members:
        out += m


def _locate(value: Any, path: str, depth: int) -> None:
    """Find the first part of `value` the encoder refuses and raise an EncodingError naming it."""
    if depth > _MAX_DEPTH:
        raise EncodingError(path, f"nested deeper than {_MAX_DEPTH} levels (a cycle?)")
    t = type(value)
    if t is list or t is tuple:
        for i, item in enumerate(value):
            _locate(item, f"{path}[{i}]", depth + 1)
    elif t is dict or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        items = value.items() if t is dict else ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        for k, v in items:
            if type(k) not in (str, int, bool) and not isinstance(k, Enum):
                raise EncodingError(path, f"dict key {k!r} of type {type(k).__name__} is not allowed (use str, int, bool or an Enum)")
            _locate(v, f"{path}.{k}" if type(k) is str else f"{path}[{k!r}]", depth + 1)
    elif t is set or t is frozenset:
        kinds = {type(v) for v in value}
        if len(kinds) > 1:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise EncodingError(path, f"a set of mixed types ({names}) has no deterministic order; use a list")
        for v in value:
            _locate(v, f"{path}{{}}", depth + 1)
    elif isinstance(value, PurePath) and value.is_absolute():
        raise EncodingError(path, f"absolute path {str(value)!r} cannot go into a key; use a path relative to the workspace or a dependency")
    else:
        try:
            _encode(value, bytearray(), depth)
        except _Refused:
            raise EncodingError(path, _refusal(value)) from None


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
