"""What a gc would collect: every result with its last use and the bytes collecting it frees,
then the victims, least recently used first.

A result's bytes are its record, its logs, and the CAS blobs and tree only it references: a blob
or tree that a result being kept also references stays (and frees nothing). Sizes are space on
disk (blocks, as du counts): tree files are hard links to their blobs, so a file counts once; a
tree's directories and its executables (copies, not links) count on their own.
Results of in-place outputs are never collected (their bytes live in their store, not here).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mbuild.errors import CacheCorruptError
from mbuild.stores.cas import LocalCAS
from mbuild.stores.gc.usage import request_uses, uses
from mbuild.stores.localdb import LocalDB
from mbuild.stores.results import ActionResult


@dataclass(frozen=True)
class Policy:
    """What to collect: results unused for `max_age_ns`, then the least recently used until the
    cache is at most `max_size` bytes; never what the last `keep_builds` builds used."""

    max_size: int | None = None
    max_age_ns: int | None = None
    keep_builds: int = 0


@dataclass
class Entry:
    key: str
    label: str
    last_use: int  # ns
    record_bytes: int
    logs: list[Path]
    log_bytes: int
    result: ActionResult | None  # None: an unreadable record (collected first)


@dataclass
class Plan:
    total: int  # bytes now: blobs, trees, logs, records
    victims: list[Entry] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)  # digests freed
    trees: list[str] = field(default_factory=list)  # tree digests freed
    freed: int = 0
    kept: int = 0  # results left


def logs_of(cache_dir: Path, key: str) -> list[Path]:
    """The action's logs in the cache (logs/<key>.log and the fray job's logs/<key>.job.log)."""
    return [p for p in (cache_dir / "logs" / f"{key}.log", cache_dir / "logs" / f"{key}.job.log") if p.exists()]


def disk_bytes(path: Path) -> int:
    """The space a file or directory itself takes on disk (its blocks), 0 if it is gone."""
    try:
        return os.lstat(path).st_blocks * 512
    except OSError:
        return 0


def entries(db: LocalDB, cache_dir: Path) -> tuple[list[Entry], set[int]]:
    """Every result in the action cache with its last use, and the start times of recent builds."""
    used = uses(db)
    builds = set(used.values())
    for at, _, keys in request_uses(db, cache_dir):
        builds.add(at)
        for key in keys:
            if used.get(key, 0) < at:
                used[key] = at
    out = []
    for key, data in db.result_records():
        try:
            result: ActionResult | None = ActionResult.from_record(data, key)
        except CacheCorruptError:
            result = None
        meta = result.meta if result is not None else {}
        started = meta.get("started")
        fallback = int(started * 1e9) if isinstance(started, (int, float)) else 0
        logs = logs_of(cache_dir, key)
        out.append(Entry(key, str(meta.get("label", key)), used.get(key, fallback), len(data), logs, sum(map(disk_bytes, logs)), result))
    return out, builds


def make_plan(db: LocalDB, cas: LocalCAS, policy: Policy, now_ns: int) -> Plan:
    """Which results to collect under `policy`, and the blobs and trees that frees."""
    cache_dir = cas.root
    all_entries, builds = entries(db, cache_dir)
    blob_refs: Counter[str] = Counter()
    tree_refs: Counter[str] = Counter()
    for e in all_entries:
        if e.result is not None:
            blob_refs.update({f.digest for f in e.result.files})
            tree_refs[e.result.tree] += 1
    blob_bytes = {d: disk_bytes(cas.path(d)) for d in blob_refs}
    total = sum(blob_bytes.values()) + sum(e.record_bytes + e.log_bytes for e in all_entries)
    total += sum(tree_extra(cas, e.result) for e in _one_per_tree(all_entries))
    plan = Plan(total)

    keep_from = None
    if policy.keep_builds > 0 and builds:
        recent = sorted(builds, reverse=True)
        keep_from = recent[min(policy.keep_builds, len(recent)) - 1]
    candidates = sorted(
        (e for e in all_entries if (e.result is None or e.result.place is None) and (keep_from is None or e.last_use < keep_from)),
        key=lambda e: (e.result is not None, e.last_use),
    )
    size = total
    for e in candidates:
        too_old = policy.max_age_ns is not None and e.last_use < now_ns - policy.max_age_ns
        too_big = policy.max_size is not None and size > policy.max_size
        if not (too_old or too_big or e.result is None):
            continue
        freed = e.record_bytes + e.log_bytes
        if e.result is not None:
            for d in {f.digest for f in e.result.files}:
                blob_refs[d] -= 1
                if blob_refs[d] == 0:
                    plan.blobs.append(d)
                    freed += blob_bytes[d]
            tree_refs[e.result.tree] -= 1
            if tree_refs[e.result.tree] == 0:
                plan.trees.append(e.result.tree)
                freed += tree_extra(cas, e.result)
        plan.victims.append(e)
        plan.freed += freed
        size -= freed
    plan.kept = len(all_entries) - len(plan.victims)
    return plan


def _one_per_tree(all_entries: list[Entry]) -> list[Entry]:
    seen: dict[str, Entry] = {}
    for e in all_entries:
        if e.result is not None:
            seen.setdefault(e.result.tree, e)
    return list(seen.values())


def tree_extra(cas: LocalCAS, result: ActionResult | None) -> int:
    """Space a tree takes beyond its blobs: its directories and executables (copies, not links)."""
    if result is None:
        return 0
    root = cas.root / "trees" / result.tree
    own = disk_bytes(root)
    if not own:
        return 0
    return own + sum(disk_bytes(root / d) for d in result.dirs) + sum(disk_bytes(root / f.path) for f in result.files if f.executable)
