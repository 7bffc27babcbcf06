"""Why a step would run, field by field: each run leaves the step's hash_attrs as plain JSON next to
its outputs (`.mbuild-step.json`), and a dry run compares the new ones with the last run's, so the
plan says `train.learning_rate: 0.005 -> 0.01` rather than "the config changed"."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Any

RECORD = ".mbuild-step.json"
_MAX_SHOWN = 5


def shown(hash_attrs: Any) -> Any:
    """A step's hash_attrs as explanations show them: plain JSON, a traced step's one recorded call
    as its arguments by name, step references by the step's name."""
    if isinstance(hash_attrs, dict) and list(hash_attrs) == ["calls"] and len(hash_attrs["calls"]) == 1:
        hash_attrs = hash_attrs["calls"][0]
    return plain(hash_attrs)


def plain(value: Any) -> Any:
    """`value` as JSON: dataclasses as dicts of their fields, enums by name, sets sorted; objects
    that say how they are shown (`__mbuild_shown__`: calls, output(), step references) so."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    show = getattr(value, "__mbuild_shown__", None)
    if show is not None and not isinstance(value, type):
        return plain(show())
    if isinstance(value, Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


def save(path: str, attrs: Any) -> None:
    """Leave the step's hash_attrs (plain) next to its outputs; best effort (only explanations use it)."""
    if "://" in path:
        return
    try:
        Path(path, RECORD).write_text(json.dumps(plain(attrs), sort_keys=True))
    except (OSError, TypeError, ValueError):
        pass


def load(path: str) -> Any:
    try:
        return json.loads(Path(path, RECORD).read_text())
    except (OSError, ValueError):
        return None


def changes(old: Any, new: Any, where: str = "") -> list[str]:
    """The fields that differ, as `a.b[2]: old -> new` (at most a few, then `...`)."""
    found: list[str] = []
    _diff(old, new, where, found)
    return found[:_MAX_SHOWN] + (["..."] if len(found) > _MAX_SHOWN else [])


def _diff(old: Any, new: Any, where: str, found: list[str]) -> None:
    if len(found) > _MAX_SHOWN:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(old.keys() | new.keys()):
            _diff(old.get(k, "(none)"), new.get(k, "(none)"), f"{where}.{k}" if where else str(k), found)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _diff(a, b, f"{where}[{i}]", found)
    elif old != new:
        found.append(f"{where or 'value'}: {_short(old)} -> {_short(new)}")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
