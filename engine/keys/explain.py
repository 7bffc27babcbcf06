"""Why an action runs: its key's parts compared with the ones recorded at its last build.

A target's record (its last key and a digest of each part) is kept in the local database after
each build; a miss is explained by naming every part that differs (`config 'lr': 0.001 -> 0.002`,
`rule code changed: mbuild.rules.llm.train`, `jax 0.6.0 → 0.6.1`).
"""

from __future__ import annotations

from typing import Any

from mbuild.digests import digest_bytes
from mbuild.encoding import encode
from mbuild.keys.action_key import KEY_FORMAT, KeyParts
from mbuild.model.targets import Target


def parts_record(node: Target, parts: KeyParts) -> dict:
    return {
        "salt": digest_bytes(parts.salt.encode()),
        "rule": parts.rule,
        "format": KEY_FORMAT,
        "code": parts.code.digest,
        "modules": [list(p) for p in parts.code.modules],
        "python": parts.code.python,
        "packages": dict(parts.code.packages),
        "config": {k: [digest_bytes(encode(v)), _short(v)] for k, v in node.config.items()},
        "inputs": {k: digest_bytes(encode(v)) for k, v in parts.inputs.items()},
        "env": digest_bytes(encode(parts.env)),
        "outputs": list(parts.outputs),
    }


def _package_changes(before: dict, now: dict) -> list[str]:
    """`jax 0.6.0 → 0.6.1` for each distribution whose version changed, appeared or went."""
    return [
        f"{name} {before.get(name, '(none)')} → {now.get(name, '(none)')}"
        for name in sorted(before.keys() | now.keys())
        if before.get(name) != now.get(name)
    ]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def explain_miss(previous: dict | None, now: dict) -> str:
    """Why an action with key parts `now` (a parts_record) runs, given its target's record from the
    last build (None: never built)."""
    if previous is None:
        return "never built"
    changes = []
    if previous.get("format", "mbuild-action/1") != now["format"]:
        changes.append(f"key format changed (mbuild upgraded): {previous.get('format', 'mbuild-action/1')} -> {now['format']}")
    if previous.get("salt") != now["salt"]:
        changes.append("workspace salt changed")
    if "python" in previous and previous["python"] != now["python"]:
        changes.append(f"Python {previous['python']} → {now['python']}")
    if "packages" in previous:
        changes.extend(_package_changes(previous["packages"], now["packages"]))
    if previous.get("rule") != now["rule"]:
        changes.append(f"rule changed: {previous.get('rule')} -> {now['rule']}")
    if previous.get("code") != now["code"]:
        before = dict(previous.get("modules", []))
        changed = sorted(m for m, d in now["modules"] if before.get(m) != d) or ["(module set)"]
        changes.append("rule code changed: " + ", ".join(changed))
    for name, (digest, shown) in now["config"].items():
        old = previous.get("config", {}).get(name)
        if old is None or old[0] != digest:
            changes.append(f"config {name!r}: {old[1] if old else '(new)'} -> {shown}")
    for name, digest in now["inputs"].items():
        if previous.get("inputs", {}).get(name) != digest:
            changes.append(f"input {name!r} changed")
    if previous.get("env") != now["env"]:
        changes.append("declared environment changed")
    if previous.get("outputs") != now["outputs"]:
        changes.append("declared outputs changed")
    if not changes:
        return "no cache entry for this key (evicted, or built elsewhere)"
    return "; ".join(changes)
