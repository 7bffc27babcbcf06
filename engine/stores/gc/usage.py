"""When each result was last used, recorded without a write per hit on the no-op path.

- A build that looked anything up or ran anything writes, at its end, one LMDB transaction to the
  `uses` table: action key -> the build's start time (ns, 8 bytes big-endian), for every action
  it used; a later time is never overwritten by an earlier one.
- A build answered by its no-op record (schedule/noop.py) writes nothing per action: it sets the
  times of one file, `<cache>/uses/<request key>`, to its start. The keys it used are the ones
  that request's no-op record names; gc reads them from there.
A result's last use is the latest of the two (or, with neither, the start of the action that
made it, from its record's meta).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson

from mbuild.stores.localdb import LocalDB

TABLE = b"uses"
REQUESTS = "uses"
_TARGET = "t"  # schedule/noop.py's node kind of a target: [t, package, name, key, ...]


def record_uses(db: LocalDB, keys: Iterable[str], at_ns: int) -> None:
    """Note that a build started at `at_ns` used `keys` (one write transaction)."""
    stamp = at_ns.to_bytes(8, "big")
    names = [k.encode() for k in dict.fromkeys(keys)]
    if not names:
        return

    def put(txn) -> None:
        for name in names:
            old = txn.get(name)
            if old is None or bytes(old) < stamp:
                txn.put(name, stamp)

    db.write(TABLE, put)


def touch_request(cache_dir: Path, request: str, at_ns: int) -> None:
    """Note that a build of `request` started at `at_ns` was answered by its no-op record."""
    path = cache_dir / REQUESTS / request
    try:
        os.utime(path, ns=(at_ns, at_ns))
    except FileNotFoundError:
        try:
            path.parent.mkdir(exist_ok=True)
            path.touch()
            os.utime(path, ns=(at_ns, at_ns))
        except OSError:
            pass  # a read-only cache: nothing is collected from it either
    except OSError:
        pass


def uses(db: LocalDB) -> dict[str, int]:
    """Every recorded use: action key -> time (ns)."""
    def read(txn) -> dict[str, int]:
        return {bytes(k).decode("ascii", "replace"): int.from_bytes(bytes(v), "big") for k, v in txn.cursor() if len(v) == 8}

    return db.read(TABLE, read, {})


def request_uses(db: LocalDB, cache_dir: Path) -> list[tuple[int, str, list[str]]]:
    """(time, request, keys its no-op record names) for every request answered by its record."""
    out = []
    try:
        names = os.listdir(cache_dir / REQUESTS)
    except FileNotFoundError:
        return out
    for name in names:
        try:
            at = os.stat(cache_dir / REQUESTS / name).st_mtime_ns
        except FileNotFoundError:
            continue
        out.append((at, name, noop_keys(db.get_noop(name))))
    return out


def noop_keys(data: bytes | None) -> list[str]:
    """The action keys a no-op record names (none if it is unreadable)."""
    try:
        body = orjson.loads(data) if data else {}
        return [n[3] for n in body.get("nodes", []) if isinstance(n, list) and len(n) > 3 and n[0] == _TARGET and isinstance(n[3], str)]
    except (orjson.JSONDecodeError, AttributeError):
        return []


def forget(db: LocalDB, keys: list[str]) -> None:
    """Drop the use records of collected keys."""
    db.write(TABLE, lambda txn: [txn.delete(k.encode()) for k in keys])
