"""What the processes of one build have learnt about a remote cache (its breaker, refused uploads,
corrupt objects), kept in the local database's `remote` table so every process of the build
shares it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from mbuild.stores.localdb import LocalDB


class RemoteHealth:
    """What the processes of one build (driver, workers, fray jobs on this machine) have learnt
    about one remote cache, shared through the `remote` table (the stores.remote.SharedHealth
    protocol).

    One record per URL holds the build's id, its consecutive failed requests, and, once the breaker
    opened or a write was refused, why. Every process reads it (microseconds) before each request,
    so an outage found by one process costs the others nothing, and one found by several adds up
    to `max_failures` failures for the whole build, not per process. The record belongs to its
    build: any other build (a later one, or one sharing this cache) reads it as fresh and tries the
    remote again; the next outage overwrites it. On a read-only cache nothing is shared (each
    process keeps its own breaker).

    Corrupt remote objects ("blob" digests, "ac" keys) are remembered per URL whatever the build,
    until a verified upload replaces them.
    """

    def __init__(self, db: LocalDB, url: str, build: str):
        self.db, self.build = db, build
        name = url.rstrip("/").encode()
        self._key = b"health\0" + name
        self._bad = b"bad\0" + name + b"\0"

    def _state(self, txn) -> dict:
        raw = txn.get(self._key)
        try:
            state = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            state = {}
        return state if isinstance(state, dict) and state.get("build") == self.build else {"build": self.build}

    def _read(self) -> dict:
        return self.db.read(b"remote", self._state, {})

    def _update(self, change: Callable[[dict], None]) -> dict:
        def update(txn) -> dict:
            state = self._state(txn)
            change(state)
            txn.put(self._key, orjson.dumps(state))
            return state

        return self.db.write(b"remote", update, {})

    def down(self) -> str | None:
        return self._read().get("down")

    def mark_down(self, reason: str) -> None:
        self._update(lambda s: s.setdefault("down", reason))

    def failed(self) -> int:
        return self._update(lambda s: s.__setitem__("failures", s.get("failures", 0) + 1)).get("failures", 0)

    def succeeded(self) -> None:
        if self._read().get("failures"):  # the common case is a read, no write
            self._update(lambda s: s.__setitem__("failures", 0))

    def uploads_refused(self) -> str | None:
        return self._read().get("refused")

    def refuse_uploads(self, reason: str) -> None:
        self._update(lambda s: s.setdefault("refused", reason))

    def mark_bad(self, kind: str, name: str, reason: str) -> None:
        data = orjson.dumps({"at": time.time(), "reason": reason[:500]})
        self.db.write(b"remote", lambda txn: txn.put(self._bad + f"{kind}/{name}".encode(), data))

    def bad(self, kind: str, names) -> set[str]:
        names = list(names)
        if not names or not self.any_bad():
            return set()
        return self.db.read(b"remote", lambda txn: {n for n in names if txn.get(self._bad + f"{kind}/{n}".encode()) is not None}, set())

    def any_bad(self) -> bool:
        def look(txn) -> bool:
            cursor = txn.cursor()
            return cursor.set_range(self._bad) and bytes(cursor.key()).startswith(self._bad)

        return self.db.read(b"remote", look, False)

    def healed(self, kind: str, names) -> None:
        keys = [self._bad + f"{kind}/{n}".encode() for n in names]
        if keys:
            self.db.write(b"remote", lambda txn: [txn.delete(k) for k in keys])
