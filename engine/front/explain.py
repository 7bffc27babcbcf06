"""`mbuild explain LABEL`: why an action would run now, or why it ran at its last build.

The target is keyed as a dry run keys it and its key parts are compared with its record (the parts
of the last key recorded for it): if the key changed, the differences are why it would run (or,
when the new key is cached already, why it is a hit of an older build); if not, the record is
compared with the one before it, which says why the last change of its key ran it. `--deep`
follows each changed dependency one level down, and so on through theirs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mbuild.keys.explain import Change, diff_parts
from mbuild.keys.records import parts_record, short
from mbuild.labels import Label
from mbuild.front.plan import Plan
from mbuild.schedule.status import State

_INDENT = "    "


@dataclass
class Explainer:
    plan: Plan
    deep: bool
    seen: set[Label] = field(default_factory=set)

    def lines(self, label: Label, depth: int = 0) -> list[str]:
        """The explanation of `label`: a head line, then one line per changed part (and, deep, the
        explanation of each changed dependency under it)."""
        self.seen.add(label)
        pad = _INDENT * depth
        head, changes = self._explain(label)
        out = [f"{pad}{label}: {head}"]
        for change in changes:
            below = Label(*change.label[2:].split(":", 1)) if change.label else None
            follow = self.deep and below is not None and below in self.plan.graph.index
            out.append(f"{pad}  {change.text}{' (explained above)' if follow and below in self.seen else ''}")
            if follow and below not in self.seen:
                out.extend(self.lines(below, depth + 1))
        return out

    def _explain(self, label: Label) -> tuple[str, list[Change]]:
        st = self.plan.status(label)
        node = self.plan.target(label)
        records = self.plan.scheduler.records
        record = records.db.get_label(str(label))
        now = parts_record(node.config, st.parts) if st.parts is not None else None
        if st.state is State.WOULD_RUN:
            what = f"would run (key {short(st.key)} is not cached)" if st.key else "would run (after its dependencies that would run)"
            if record is None:
                return what, [Change("new", "never built")]
            if now is None:  # pragma: no cover - a dry run keys every would-run action
                return what, []
            return what, diff_parts(record, now, records.code) or [Change("cache", "no cache entry for this key (evicted, or built elsewhere)")]
        if record is None:
            return f"cached (key {short(st.key)}); no earlier build of it is recorded here (built elsewhere)", []
        if record.get("key") != st.key and now is not None:
            return (
                f"cached (key {short(st.key)}, built before); it differs from its last recorded key {short(record.get('key'))} in",
                diff_parts(record, now, records.code),
            )
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("at", 0)))
        how = "ran" if record.get("how") == "ran" else "was a cache hit"
        previous = record.get("previous")
        if previous is None:
            return f"up to date (key {short(st.key)}); it {how} at {when}", [Change("new", "never built before")]
        return f"up to date (key {short(st.key)}); it {how} at {when} because", diff_parts(previous, record, records.code)
