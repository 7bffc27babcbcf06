"""Single-flight leases: at most one live holder per key in a shared store, with fencing.


A builder takes a lease on an action's key before running it, renews it while it runs (a
`Heartbeat`), and releases it when done. Others that want the same key wait; a lease whose holder
stopped renewing is stale and is taken over. The protocol, its guarantees and its limits are in
docs/leases.md; in short:

- A lease is one small JSON object at `<location>/<key>` written only by compare-and-swap (CAS) on
  the version the writer last read: local files (a per-key `flock` plus an atomic rename; the
  version is a hash of the bytes), GCS (`ifGenerationMatch`), S3 (`If-Match` on the ETag,
  `If-None-Match: *` to create). Every write carries a fresh random `rev`, so equal bodies never
  share a version (no ABA).
- `renew()` is a CAS on our own last version: if anyone else wrote, we lost it (`LeaseLost`).
  `release()` is a CAS to a "released" body, so it never disturbs a new owner. Nothing deletes.
- `held()` is judged by our own clock (CLOCK_BOOTTIME where available: it keeps counting while a
  process is stopped or the machine sleeps): true only until `ttl - margin` after the start of the
  last successful write. Others take over only `ttl` after that write. So a holder that stalls
  (SIGSTOP, a blocked heartbeat) has already stopped believing it holds the lease before anyone can
  take it over, and it never comes back: once `held()` is false it stays false.

Usage::

    store = open_leases("gs://bucket/cache/leases", ttl=90, storage_options=opts)
    lease = store.lease(key, note="//pkg:target")
    if lease.try_acquire():
        try:
            with Heartbeat(lease, interval=30, on_lost=stop_the_action):
                run()
                lease.check()          # LeaseLost if lost: do not publish
                publish_create_if_absent()
        finally:
            lease.release()
    else:
        print(lease.holder().describe())   # who holds it, since when
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from mbuild.leases.holders import MACHINE, HOST, USER, Holder, LeaseLost, clock, holder_is_dead_here, own_start
from mbuild.leases.objects import SwapObject, Conflict, objects_at

log = logging.getLogger("mbuild.leases")

FORMAT = 1
DEFAULT_TTL = 90.0
DEFAULT_RENEW = 30.0
# Suggested exit status for a worker process that kills itself because it lost its lease
# (EX_TEMPFAIL: the work is not done, someone else is doing it).
LEASE_LOST_EXIT_CODE = 75

_KEY_RE = re.compile(r"^[A-Za-z0-9._=+@-]+(/[A-Za-z0-9._=+@-]+)*$")


def _write_resolving(obj: SwapObject, data: bytes, expected: str | None, rev: str) -> str:
    """CAS write; if it reports a conflict but the stored body is ours (a retried request whose
    first attempt had landed), it succeeded."""
    try:
        return obj.write(data, expected)
    except Conflict:
        current = obj.read()
        if current is not None and _parse(current[0]).get("rev") == rev:
            return current[1]
        raise


def _parse(data: bytes) -> dict:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _live(body: dict, now: float, pid_check: bool) -> bool:
    """Does this body name a live holder? Released, unreadable, expired -> no."""
    if body.get("state") != "held":
        return False
    expires = body.get("expires")
    if not isinstance(expires, (int, float)) or expires <= now:
        return False
    return not (pid_check and holder_is_dead_here(body))


def _holder(body: dict) -> Holder | None:
    try:
        return Holder(
            owner=str(body["owner"]), host=str(body["host"]), pid=int(body["pid"]), since=float(body["since"]),
            expires=float(body["expires"]), epoch=int(body["epoch"]), user=str(body.get("user", "")),
            note=str(body.get("note", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# the lease


class Lease:
    """One builder's attempts at holding one key. Thread-safe (a Heartbeat renews from its thread).

    Body (JSON): {"format", "state": "held"|"released", "owner", "epoch", "rev", "host", "pid",
    "user", "proc": {"boot", "pidns", "start"}, "since", "renewed", "expires", "ttl", "note"}.
    """

    def __init__(self, obj: SwapObject, key: str, *, ttl: float, margin: float, note: str = "", pid_check: bool = True):
        if not ttl > 0 or not 0 <= margin < ttl:
            raise ValueError(f"lease ttl must be > 0 and 0 <= margin < ttl (ttl={ttl}, margin={margin})")
        self.obj, self.key, self.ttl, self.margin, self.note, self.pid_check = obj, key, ttl, margin, note, pid_check
        self.owner = ""  # set on each acquisition (uuid4 hex)
        self.epoch = 0
        self.since = 0.0
        self._version: str | None = None
        self._deadline = 0.0  # our clock: ttl after the start of our last successful write
        self.seen: Holder | None = None  # the live holder that made the last try_acquire fail
        self._lost = threading.Event()
        self._mu = threading.Lock()

    def __repr__(self) -> str:
        return f"Lease({self.obj.where!r}, owner={self.owner[:8] or '-'}, epoch={self.epoch}, held={self.held()})"

    @property
    def where(self) -> str:
        return self.obj.where

    def _body(self, state: str, expires: float, rev: str) -> bytes:
        now = time.time()
        proc = dict(MACHINE)
        start = own_start()
        if start is not None:
            proc["start"] = start
        return json.dumps({
            "format": FORMAT, "state": state, "owner": self.owner, "epoch": self.epoch, "rev": rev,
            "host": HOST, "pid": os.getpid(), "user": USER, "proc": proc, "since": self.since,
            "renewed": now, "expires": expires, "ttl": self.ttl, "note": self.note,
        }, separators=(",", ":")).encode()

    def try_acquire(self) -> bool:
        """Take the lease if it is absent, released or stale (a takeover: epoch + 1). False if
        someone else holds it live, or won the race. On a lease we hold, renews it."""
        with self._mu:
            if self._version is not None and self.held():
                try:
                    self._renew_locked()
                    return True
                except LeaseLost:
                    return False
            self.seen = None
            current = self.obj.read()
            if current is None:
                expected, epoch = None, 1
            else:
                body = _parse(current[0])
                if _live(body, time.time(), self.pid_check):
                    self.seen = _holder(body)
                    return False
                prev = body.get("epoch")
                expected, epoch = current[1], (prev if isinstance(prev, int) else 0) + 1
            self.owner, self.epoch = uuid.uuid4().hex, epoch
            rev = uuid.uuid4().hex
            started = clock()
            self.since = time.time()
            data = self._body("held", self.since + self.ttl, rev)
            try:
                version = _write_resolving(self.obj, data, expected, rev)
            except Conflict:
                self.owner, self.epoch = "", 0
                return False
            self._version, self._deadline = version, started + self.ttl
            self._lost.clear()
            log.debug("acquired %s epoch %d", self.where, epoch)
            return True

    def renew(self) -> None:
        """Extend the lease: a CAS on our own last version. LeaseLost if anyone else wrote, or if
        our deadline already passed (a lapsed lease is lost even if nobody took it)."""
        with self._mu:
            self._renew_locked()

    def _renew_locked(self) -> None:
        if self._version is None:
            raise LeaseLost(f"lease {self.where} is not held")
        if not self.held():
            raise LeaseLost(f"lease {self.where} lapsed: not renewed within {self.ttl - self.margin:.1f}s")
        rev = uuid.uuid4().hex
        started = clock()
        data = self._body("held", time.time() + self.ttl, rev)
        try:
            version = _write_resolving(self.obj, data, self._version, rev)
        except Conflict:
            self._lost.set()
            raise LeaseLost(f"lease {self.where} was taken over: {self._describe_current()}") from None
        self._version, self._deadline = version, started + self.ttl

    def release(self) -> None:
        """Give the lease up: a CAS from our last version to a "released" body, so waiters can take
        it at once. If someone else has written since, it is theirs and we leave it alone. Never raises
        for a lost lease; does nothing when we never held it."""
        if not self._mu.acquire(timeout=max(1.0, self.margin)):
            log.warning("lease %s: not released (a renewal is stuck); it will go stale", self.where)
            return
        try:
            version, self._version = self._version, None
            self._lost.set()
            if version is None:
                return
            rev = uuid.uuid4().hex
            try:
                _write_resolving(self.obj, self._body("released", 0.0, rev), version, rev)
            except Conflict:
                pass  # someone took it over: theirs now
            except Exception as exc:  # the lease will go stale instead
                log.warning("lease %s: release failed (%s); it will go stale", self.where, exc)
        finally:
            self._mu.release()

    def remaining(self) -> float:
        """Seconds until held() turns false (0 when lost)."""
        if self._lost.is_set() or self._version is None:
            return 0.0
        return max(0.0, self._deadline - self.margin - clock())

    def held(self) -> bool:
        """Do we hold it? Not lost, and not past our own deadline minus the safety margin, by our own
        clock (no I/O). Once false, false for good: a lapsed lease must be acquired anew."""
        if self._lost.is_set() or self._version is None:
            return False
        if clock() >= self._deadline - self.margin:
            self._lost.set()
            return False
        return True

    def check(self) -> None:
        """Raise LeaseLost unless held(): call it immediately before publishing a result."""
        if not self.held():
            raise LeaseLost(f"lease {self.where} is no longer held (epoch {self.epoch})")

    def mark_lost(self) -> None:
        self._lost.set()

    def holder(self) -> Holder | None:
        """The live holder (maybe us), or None when the lease is free, released or stale."""
        current = self.obj.read()
        if current is None:
            return None
        body = _parse(current[0])
        return _holder(body) if _live(body, time.time(), self.pid_check) else None

    def last_holder(self) -> tuple[Holder | None, str]:
        """Whoever wrote the lease last, and its state: "absent", "held", "stale", "released", "unreadable"."""
        current = self.obj.read()
        if current is None:
            return None, "absent"
        body = _parse(current[0])
        holder = _holder(body)
        if holder is None:
            return None, "unreadable"
        if body.get("state") == "released":
            return holder, "released"
        return holder, "held" if _live(body, time.time(), self.pid_check) else "stale"

    def _describe_current(self) -> str:
        try:
            holder, state = self.last_holder()
        except Exception as exc:
            return f"(could not read it: {exc})"
        return f"{state} by {holder.describe()}" if holder else state


# --------------------------------------------------------------------------------------------
# stores


class LeaseStore:
    """Leases on keys under one location: a local directory, gs://bucket/prefix or s3://bucket/prefix."""

    def __init__(self, location: str, factory: Callable[[str], SwapObject], *, ttl: float, margin: float, pid_check: bool):
        self.location, self._factory = location, factory
        self.ttl, self.margin, self.pid_check = ttl, margin, pid_check

    def __repr__(self) -> str:
        return f"LeaseStore({self.location!r}, ttl={self.ttl})"

    def lease(self, key: str, *, note: str = "") -> Lease:
        """A new Lease object (one acquisition attempt at a time) on `key`; `note` is shown to waiters."""
        if not _KEY_RE.match(key) or any(part in (".", "..") for part in key.split("/")):
            raise ValueError(f"invalid lease key {key!r}")
        return Lease(self._factory(key), key, ttl=self.ttl, margin=self.margin, note=note, pid_check=self.pid_check)

    def holder(self, key: str) -> Holder | None:
        return self.lease(key).holder()


def default_margin(ttl: float) -> float:
    """How long before the others may take over a holder stops trusting its lease: ttl/6
    (15 s of 90 s). It absorbs clock skew between hosts and the time a publish takes."""
    return ttl / 6


def open_leases(
    location: str | os.PathLike,
    *,
    ttl: float = DEFAULT_TTL,
    margin: float | None = None,
    storage_options: dict | None = None,
    fs: Any = None,
    pid_check: bool = True,
    timeout: float | None = None,
    guard: Callable[[SwapObject], SwapObject] | None = None,
) -> LeaseStore:
    """A lease store at `location`: a local path or file:// URL, gs://bucket/prefix, s3://bucket/prefix.

    Remote stores use the fsspec filesystem (gcsfs / s3fs) built from `storage_options` (fsspec
    caches instances, so it is the very object a remote cache with the same options uses), or `fs`.
    `ttl`: a lease not renewed for this long is stale. `margin`: a holder stops trusting its lease
    this long before others may take it over (default ttl/6). `pid_check`: a lease whose holder is
    a dead process on this same machine (same host, boot and pid namespace) is stale at once.
    `timeout`: a deadline per remote request (gcsfs alone retries a refused connection for ~40 s).
    `guard`: wraps each lease object (e.g. to skip and count requests for a shared circuit breaker).
    """
    margin = default_margin(ttl) if margin is None else margin
    root, factory = objects_at(location, storage_options, fs, timeout)
    if guard is not None:
        objects = factory
        factory = lambda key: guard(objects(key))  # noqa: E731
    return LeaseStore(root, factory, ttl=ttl, margin=margin, pid_check=pid_check)
