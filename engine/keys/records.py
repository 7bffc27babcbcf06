"""The record of a target's key parts kept for explanations (keys/explain.py compares two): the
configuration by dotted path into dataclasses and dicts (values as their repr), the inputs by
label or path with their digests, the environment, the code's modules and versions, the rule.

Records stay bounded: a configuration value whose repr is longer than _MAX_SHOWN characters is
kept as its digest and length, and an input attribute with more than _MAX_INPUTS entries as one
digest. Values of variables whose names look like secrets are kept as digests only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.keys.action_key import KEY_FORMAT, KeyParts

RECORD_VERSION = 2
_MAX_SHOWN = 4096  # characters of a configuration value's repr kept in a record
_MAX_INPUTS = 1000  # entries of one input attribute kept one by one
_SHORT = 8  # hex digits of a digest shown


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """Configuration values by dotted path: dataclass fields and string-keyed dict entries are
    followed (`train.seed`), anything else is a leaf."""
    return _walk_config(config)[0]


def _walk_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the leaves by dotted path, the type of each dataclass passed through by its path)."""
    flat: dict[str, Any] = {}
    types: dict[str, str] = {}

    def walk(path: str, value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = dataclasses.fields(value)
            if fields:
                types[path] = f"{type(value).__module__}.{type(value).__qualname__}"
                for f in fields:
                    walk(f"{path}.{f.name}", getattr(value, f.name))
                return
        elif type(value) is dict and value and all(type(k) is str for k in value):
            for k in sorted(value):
                walk(f"{path}.{k}", value[k])
            return
        flat[path] = value

    for name, value in config.items():
        walk(name, value)
    return flat, types


def input_entries(inputs: dict[str, Any]) -> dict[str, list[list]]:
    """Each input attribute (`attr`, or `attr.key` inside a dict) as its [kind, name, digest] entries."""
    out: dict[str, list[list]] = {}

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value):
                walk(f"{path}.{k}", value[k])
        elif _is_entry(value):
            out[path] = [list(value)]
        elif isinstance(value, list):
            out[path] = [list(v) for v in value if _is_entry(v)]

    for name, value in inputs.items():
        walk(name, value)
    return out


def _is_entry(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and value[0] in ("file", "tree") and isinstance(value[1], str)


def parts_record(config_values: dict[str, Any], parts: KeyParts) -> dict:
    """What a record keeps of a target's key parts (`config_values`: its configuration attributes):
    enough to name each part that changes, bounded."""
    config = {}
    leaves, types = _walk_config(config_values)
    for path, value in leaves.items():
        text = repr(value)
        config[path] = [digest_bytes(encode(value)), text if len(text) <= _MAX_SHOWN else None, len(text)]
    inputs: dict[str, Any] = {}
    for path, entries in input_entries(parts.inputs).items():
        inputs[path] = entries if len(entries) <= _MAX_INPUTS else [["digest", str(len(entries)), digest_bytes(encode(entries))]]
    return {
        "v": RECORD_VERSION,
        "salt": parts.salt,
        "rule": parts.rule,
        "format": KEY_FORMAT,
        "code": parts.code.digest,
        "modules": [list(p) for p in parts.code.modules],
        "python": parts.code.python,
        "packages": dict(parts.code.packages),
        "config": config,
        "types": types,
        "inputs": inputs,
        "env": {name: shown_env(name, value) for name, value in parts.env.items()},
        "outputs": list(parts.outputs),
    }


_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY")


def shown_env(name: str, value: str | None) -> str | None:
    """A declared variable's value as records and aquery keep it: a name that looks like a secret's
    (`HF_TOKEN`, `AWS_SECRET_ACCESS_KEY`) keeps only a digest of its value, so that neither the
    database, an events file nor a CI log ever holds the secret."""
    if value is None or not any(word in name.upper() for word in _SECRET_WORDS):
        return value
    return f"(hidden: digest {short(digest_bytes(value.encode('utf-8', 'surrogateescape')))})"


def short(digest: str | None) -> str:
    return "(none)" if digest is None else digest[:_SHORT] + "…"
