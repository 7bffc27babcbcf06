"""`mbuild aquery EXPR`: the actions of the targets a query selects, each with its key and every part
that went into it (Bazel's aquery for mbuild), as text or JSON.

A key holds its dependencies' output digests, so the targets are keyed as a dry run keys them: an
action after a dependency that would run has no key yet (`"state": "unknown"`, `"key": null`) and
that dependency's digest is null.
"""

from __future__ import annotations

from typing import Any

import orjson

from mbuild.keys.explain import env_text
from mbuild.keys.records import flatten_config, input_entries, shown_env
from mbuild.front.plan import Plan
from mbuild.labels import Label
from mbuild.schedule.status import State

SCHEMA = "mbuild-aquery/1"


def action(plan: Plan, label: Label) -> dict[str, Any]:
    """One action as plain data: what `--output json` prints for it."""
    node = plan.target(label)
    st = plan.status(label)
    parts = st.parts
    assert parts is not None  # a dry run keys every action it reaches
    code = plan.scheduler.records.code
    state = "cached" if st.state is State.HIT else ("would_run" if st.key else "unknown")
    return {
        "label": str(label),
        "kind": node.rule.kind,
        "state": state,
        "key": st.key,
        "rule": parts.rule,
        "code": {
            "digest": parts.code.digest,
            "python": parts.code.python,
            "modules": [{"module": m, "digest": d, "path": code.where(m)} for m, d in parts.code.modules],
            "packages": dict(parts.code.packages),
        },
        "config": {path: repr(value) for path, value in flatten_config(node.config).items()},
        "inputs": {attr: [{"kind": k, "name": n, "digest": d} for k, n, d in entries] for attr, entries in input_entries(parts.inputs).items()},
        "env": {name: shown_env(name, value) for name, value in parts.env.items()},
        "outputs": list(parts.outputs),
        "salt": parts.salt,
    }


def render_json(actions: list[dict]) -> str:
    return orjson.dumps({"schema": SCHEMA, "actions": actions}, option=orjson.OPT_INDENT_2).decode() + "\n"


def render_text(actions: list[dict]) -> str:
    out: list[str] = []
    for a in actions:
        state = {"cached": "cached", "would_run": "would run", "unknown": "not known yet: a dependency would run first"}[a["state"]]
        out += [f"action {a['label']}  ({a['kind']})", f"  key:      {a['key'] or '(none yet)'}  [{state}]", f"  rule:     {a['rule']}"]
        code = a["code"]
        out.append(f"  code:     {code['digest']}  (Python {code['python']})")
        out += [f"    {m['path']}  {m['digest']}" for m in code["modules"]]
        if code["packages"]:
            out.append("  packages: " + ", ".join(f"{n} {v}" for n, v in sorted(code["packages"].items())))
        if a["config"]:
            out.append("  config:")
            out += [f"    {path} = {value}" for path, value in a["config"].items()]
        if a["inputs"]:
            out.append("  inputs:")
            for attr, entries in a["inputs"].items():
                out += [f"    {attr}: {e['name']}  {'source' if e['kind'] == 'file' else 'output'} {e['digest'] or '(would be rebuilt)'}" for e in entries]
        if a["env"]:
            out.append("  env:")
            out += [f"    {name} = {env_text(value)}" for name, value in a["env"].items()]
        out.append(f"  outputs:  {', '.join(a['outputs'])}")
        out.append(f"  salt:     {a['salt']!r}")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
