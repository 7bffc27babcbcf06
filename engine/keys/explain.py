"""Why an action runs: its key's parts compared with the ones recorded at its last build.

A target's record (its last key, and each part of it in a form that can be shown) is kept in the
local database whenever its key changes, with the record before it (what `mbuild explain` needs to
say why the last build ran it); a miss is explained by naming every part that differs:
`train.seed: 0 → 1` (configuration by dotted path into dataclasses and dicts, values in full),
`code rules/llm/train.py changed (lines 12–14)`, `input //experiments:tokens: output digest
3fa2… → 9c01…`, `env HF_HOME: '/a' → '/b'`, `jax 0.6.0 → 0.6.1`.

Records stay bounded: a configuration value longer than _MAX_SHOWN characters is kept as its digest
and length, and an input attribute with more than _MAX_INPUTS entries as one digest.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.keys.action_key import KEY_FORMAT, KeyParts

RECORD_VERSION = 2
_MAX_SHOWN = 4096  # characters of a configuration value's repr kept in a record
_MAX_INPUTS = 1000  # entries of one input attribute kept one by one
_MAX_RANGES = 8  # changed line ranges named per module
_SHORT = 8  # hex digits of a digest shown


@dataclass(frozen=True)
class Change:
    """One part of a key that differs: `kind` is format, salt, python, package, rule, code, config,
    input, env or outputs; `label` and `digest` name an input target and its output digest now
    (None: it would run first), for following the change one level down."""

    kind: str
    text: str
    label: str | None = None
    digest: str | None = None


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


class CodeDiffer:
    """Names the lines of a module that changed between two of its versions: `path_of(module)` is
    where its source is now, `stored(digest)` the bytes of an earlier version (None: not kept)."""

    def __init__(self, root: Path, path_of: Callable[[str], Path | None], stored: Callable[[str], bytes | None]):
        self._root = root
        self._path_of = path_of
        self._stored = stored
        self._said: dict[tuple[str, str, str], str] = {}

    def where(self, module: str) -> str:
        path = self._path_of(module)
        if path is None:
            return module
        try:
            return path.resolve().relative_to(self._root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def describe(self, module: str, before: str, now: str) -> str:
        said = self._said.get((module, before, now))
        if said is None:
            said = self._said[(module, before, now)] = f"code {self.where(module)} changed{self._lines(module, before, now)}"
        return said

    def _source(self, module: str, digest: str) -> bytes | None:
        path = self._path_of(module)
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError:
                data = None
            if data is not None and digest_bytes(data) == digest:
                return data
        return self._stored(digest)

    def _lines(self, module: str, before: str, now: str) -> str:
        old, new = self._source(module, before), self._source(module, now)
        if old is None or new is None:
            return " (its earlier source is not kept)"
        a = old.decode("utf-8", "replace").splitlines()
        b = new.decode("utf-8", "replace").splitlines()
        ranges = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if op == "equal":
                continue
            if j2 > j1:
                ranges.append(f"line {j1 + 1}" if j2 == j1 + 1 else f"lines {j1 + 1}–{j2}")
            else:
                ranges.append(f"removed {i2 - i1} line{'s' if i2 - i1 != 1 else ''} after line {j1}")
        if not ranges:
            return " (line endings or encoding only)"
        more = f" and {len(ranges) - _MAX_RANGES} more" if len(ranges) > _MAX_RANGES else ""
        return f" ({', '.join(ranges[:_MAX_RANGES])}{more})"


def diff_parts(previous: dict, now: dict, code: CodeDiffer | None = None) -> list[Change]:
    """Every part of `now` (a parts_record) that differs from `previous` (a record of the same label).
    A record of an unexpected shape (damaged, or another mbuild's) is said to be unreadable."""
    try:
        return _diff_parts(previous, now, code)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return [Change("record", "its last record could not be read (damaged, or written by another mbuild version)")]


def _diff_parts(previous: dict, now: dict, code: CodeDiffer | None) -> list[Change]:
    changes: list[Change] = []
    before_format = previous.get("format", "mbuild-action/1")
    if before_format != now["format"]:
        changes.append(Change("format", f"key format changed (mbuild upgraded): {before_format} → {now['format']}"))
    if previous.get("v") != RECORD_VERSION:
        # Recorded by an older mbuild: parts are compared where they can be, coarsely.
        return changes + _diff_old(previous, now, code)
    if previous["salt"] != now["salt"]:
        changes.append(Change("salt", f"workspace salt: {previous['salt']!r} → {now['salt']!r}"))
    changes.extend(_diff_runtime(previous, now))
    changes.extend(_diff_code(previous, now, code))
    changes.extend(_diff_config(previous["config"], now["config"]))
    changes.extend(_diff_types(previous.get("types", {}), now["types"]))
    changes.extend(_diff_inputs(previous["inputs"], now["inputs"]))
    for name in sorted(previous["env"].keys() | now["env"].keys()):
        if name not in now["env"]:
            changes.append(Change("env", f"env {name}: no longer declared"))
        elif name not in previous["env"]:
            changes.append(Change("env", f"env {name}: newly declared ({env_text(now['env'][name])})"))
        elif previous["env"][name] != now["env"][name]:
            changes.append(Change("env", f"env {name}: {env_text(previous['env'][name])} → {env_text(now['env'][name])}"))
    if previous["outputs"] != now["outputs"]:
        changes.append(Change("outputs", f"declared outputs: {', '.join(previous['outputs'])} → {', '.join(now['outputs'])}"))
    return changes


def env_text(value: str | None) -> str:
    """A declared variable's value as explanations print it."""
    return "(unset)" if value is None else value if value.startswith("(hidden: ") else repr(value)


def _diff_runtime(previous: dict, now: dict) -> list[Change]:
    changes = []
    if "python" in previous and previous["python"] != now["python"]:
        changes.append(Change("python", f"Python {previous['python']} → {now['python']}"))
    if "packages" in previous:
        before, after = previous["packages"], now["packages"]
        changes.extend(
            Change("package", f"{name} {before.get(name, '(none)')} → {after.get(name, '(none)')}")
            for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)
        )
    if previous.get("rule") != now["rule"]:
        changes.append(Change("rule", f"rule: {previous.get('rule')} → {now['rule']}"))
    return changes


def _diff_code(previous: dict, now: dict, code: CodeDiffer | None) -> list[Change]:
    if previous.get("code") == now["code"]:
        return []
    before, after = dict(previous.get("modules", [])), dict(now["modules"])
    changes = []
    for module in sorted(before.keys() | after.keys()):
        where = code.where(module) if code else module
        if module not in before:
            changes.append(Change("code", f"code {where} now part of the rule's code"))
        elif module not in after:
            changes.append(Change("code", f"code {where} no longer part of the rule's code"))
        elif before[module] != after[module]:
            changes.append(Change("code", code.describe(module, before[module], after[module]) if code else f"code {module} changed"))
    return changes or [Change("code", "code changed")]


def _shown(entry: list) -> str:
    digest, text, length = entry
    return text if text is not None else f"(a {length}-character value, digest {short(digest)})"


def _diff_config(previous: dict, now: dict) -> list[Change]:
    changes = []
    for path in sorted(previous.keys() | now.keys(), key=lambda p: (p.split("."), p)):
        old, new = previous.get(path), now.get(path)
        if old is None:
            changes.append(Change("config", f"{path}: (new) → {_shown(new)}"))
        elif new is None:
            changes.append(Change("config", f"{path}: {_shown(old)} → (gone)"))
        elif old[0] != new[0]:
            changes.append(Change("config", f"{path}: {_shown(old)} → {_shown(new)}"))
    return changes


def _diff_types(previous: dict, now: dict) -> list[Change]:
    """A dataclass value whose class changed (its fields may be the same)."""
    return [
        Change("config", f"{path}: {previous[path]} → {now[path]}")
        for path in sorted(now.keys() & previous.keys(), key=lambda p: (p.split("."), p))
        if previous[path] != now[path]
    ]


def _diff_inputs(previous: dict, now: dict) -> list[Change]:
    changes = []
    for attr in sorted(previous.keys() | now.keys()):
        old, new = previous.get(attr), now.get(attr)
        if old is None or new is None:
            changes.append(Change("input", f"input attribute {attr!r} {'added' if old is None else 'removed'}"))
            continue
        if old == new:
            continue
        if any(e[0] == "digest" for e in (*old, *new)):
            changes.append(Change("input", f"input {attr!r} changed ({len(new)} entries)"))
            continue
        before = {e[1]: e for e in old}
        after = {e[1]: e for e in new}
        for kind, name, digest in new:
            was = before.get(name)
            if was is None:
                changes.append(Change("input", f"input {attr!r}: added {_input_name(kind, name)}"))
            elif was[2] != digest:
                changes.append(_input_change(kind, name, was[2], digest))
        changes.extend(Change("input", f"input {attr!r}: removed {_input_name(kind, name)}") for kind, name, _ in old if name not in after)
        if [e[1] for e in old if e[1] in after] != [e[1] for e in new if e[1] in before]:
            changes.append(Change("input", f"input {attr!r}: order changed"))
    return changes


def _input_name(kind: str, name: str) -> str:
    return name if kind == "tree" else f"source {name}"


def _input_change(kind: str, name: str, before: str, now: str | None) -> Change:
    if kind == "file":
        return Change("input", f"input source {name}: content digest {short(before)} → {short(now)}")
    if now is None:
        return Change("input", f"dependency {name} will run, so its output may change", name, None)
    return Change("input", f"input {name}: output digest {short(before)} → {short(now)}", name, now)


def _diff_old(previous: dict, now: dict, code: CodeDiffer | None) -> list[Change]:
    """A record from before field-level records (format 1): what can still be compared."""
    changes = _diff_runtime(previous, now) + _diff_code(previous, now, code)
    return changes + [Change("config", "configuration, inputs or environment (last recorded by an older mbuild: no field-level detail)")]


def explain_miss(previous: dict | None, now: dict, code: CodeDiffer | None = None) -> str:
    """Why an action with key parts `now` (a parts_record) runs, given its target's record from the
    last build (None: never built): its changes joined by `; `."""
    if previous is None:
        return "never built"
    changes = diff_parts(previous, now, code)
    if not changes:
        return "no cache entry for this key (evicted, or built elsewhere)"
    return "; ".join(c.text for c in changes)
