"""Collecting: in batches, each planned afresh under the cache lock held alone (lock.py), so no
build runs while a batch deletes, and each batch sees what the builds between batches recorded.

Within a batch, records go first (one LMDB transaction: the results, their use and tree-stamp
records, and the no-op records naming them), then trees, blobs and logs. A crash between the two
leaves files no record names, never a record whose bytes are gone; and a record whose blobs are
gone reads as a miss anyway (its tree is checked, its blobs verified), so the action reruns.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from mbuild.stores import trees
from mbuild.stores.cas import LocalCAS
from mbuild.stores.gc.lock import exclusive
from mbuild.stores.gc.plan import Plan, Policy, disk_bytes, tree_extra, make_plan
from mbuild.stores.gc.usage import REQUESTS, TABLE, noop_keys
from mbuild.stores.localdb import LocalDB

BATCH = 256  # results per batch: builds waiting on the lock wait for one batch at most


@dataclass
class Collected:
    before: int  # bytes when gc started
    results: int = 0
    blobs: int = 0
    trees: int = 0
    logs: int = 0
    freed: int = 0
    labels: list[str] = field(default_factory=list)


def collect(db: LocalDB, cas: LocalCAS, policy: Policy, batch: int = BATCH) -> Collected:
    """Collect what `policy` names, batch by batch, until a fresh plan names nothing. A batch
    plans afresh when anything was written to the database since the last one (a build ran)."""
    done: Collected | None = None
    plan: Plan | None = None
    limit, seen = 0, -1
    while True:
        with exclusive(cas.root):
            if plan is None or db.last_txn() != seen:
                plan = make_plan(db, cas, policy, time.time_ns())
                if done is None:
                    done = Collected(plan.total)
                    limit = len(plan.victims) + plan.kept  # builds between batches cannot keep it going forever
            if not plan.victims or done.results >= limit:
                return done
            part = _first(plan, batch)
            _delete(db, cas, part, done)
            gone_blobs, gone_trees = set(part.blobs), set(part.trees)
            plan = Plan(plan.total, plan.victims[len(part.victims):], [d for d in plan.blobs if d not in gone_blobs],
                        [t for t in plan.trees if t not in gone_trees])
            seen = db.last_txn()


def _first(plan: Plan, batch: int) -> Plan:
    """The first `batch` victims of a plan, with the blobs and trees no later victim names (those
    go with the batch that takes their last result)."""
    if len(plan.victims) <= batch:
        return plan
    victims, later = plan.victims[:batch], plan.victims[batch:]
    later_blobs = {f.digest for e in later if e.result is not None for f in e.result.files}
    later_trees = {e.result.tree for e in later if e.result is not None}
    mine_blobs = {f.digest for e in victims if e.result is not None for f in e.result.files} - later_blobs
    mine_trees = {e.result.tree for e in victims if e.result is not None} - later_trees
    return Plan(plan.total, victims, [d for d in plan.blobs if d in mine_blobs], [t for t in plan.trees if t in mine_trees])


def _delete(db: LocalDB, cas: LocalCAS, plan: Plan, done: Collected) -> None:
    keys = {e.key for e in plan.victims}
    gone_trees = set(plan.trees)

    def drop(txn, tables) -> list[bytes]:
        for key in keys:
            txn.delete(key.encode(), db=tables[b"ac"])
            txn.delete(key.encode(), db=tables[TABLE])
        for tree in gone_trees:
            txn.delete(tree.encode(), db=tables[b"treestat"])
        stale = []
        for name, data in txn.cursor(db=tables[b"noop"]):
            body = bytes(data)[33:]
            if keys.intersection(noop_keys(body)):
                stale.append(bytes(name))
        for name in stale:
            txn.delete(name, db=tables[b"noop"])
            txn.delete(name + b"/plain", db=tables[b"noop"])
        return stale

    stale: list[bytes] = []
    db.write(None, lambda txn, tables: stale.extend(drop(txn, tables)))
    for name in stale:
        try:
            os.unlink(cas.root / REQUESTS / name.decode("ascii", "replace"))
        except (FileNotFoundError, ValueError):
            pass
    freed = 0
    by_tree = {e.result.tree: e.result for e in plan.victims if e.result is not None}
    for tree in gone_trees:
        freed += tree_extra(cas, by_tree.get(tree))
        trees.discard(trees.tree_path(cas, tree))
    for digest in plan.blobs:
        path = cas.path(digest)
        try:
            size = disk_bytes(path)
            os.unlink(path)
            freed += size
        except FileNotFoundError:
            pass
    for e in plan.victims:
        freed += e.record_bytes
        for log in e.logs:
            try:
                size = disk_bytes(log)
                os.unlink(log)
                freed += size
                done.logs += 1
            except FileNotFoundError:
                pass
        done.labels.append(e.label)
    done.results += len(plan.victims)
    done.blobs += len(plan.blobs)
    done.trees += len(gone_trees)
    done.freed += freed
