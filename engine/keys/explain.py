"""Why an action runs: its key's parts compared with the ones recorded at its last build.

A target's record (its last key, and each part of it in a form that can be shown) is kept in the
local database whenever its key changes, with the record before it (what `mbuild explain` needs to
say why the last build ran it); a miss is explained by naming every part that differs:
`train.seed: 0 → 1` (configuration by dotted path into dataclasses and dicts, values in full),
`code rules/llm/train.py changed (lines 12–14)`, `input //experiments:tokens: output digest
3fa2… → 9c01…`, `env HF_HOME: '/a' → '/b'`, `jax 0.6.0 → 0.6.1`.

What a record holds is in keys/records.py; the lines a code edit changed come from codediff.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from mbuild.keys.codediff import CodeDiffer
from mbuild.keys.records import RECORD_VERSION, short


@dataclass(frozen=True)
class Change:
    """One part of a key that differs: `kind` is format, salt, python, package, rule, code, config,
    input, env or outputs; `label` and `digest` name an input target and its output digest now
    (None: it would run first), for following the change one level down."""

    kind: str
    text: str
    label: str | None = None
    digest: str | None = None


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
