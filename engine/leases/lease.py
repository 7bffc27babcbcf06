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

import fcntl
import getpass
import hashlib
import math
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("mbuild.leases.lease")

FORMAT = 1
DEFAULT_TTL = 90.0
DEFAULT_RENEW = 30.0
# Suggested exit status for a worker process that kills itself because it lost its lease
# (EX_TEMPFAIL: the work is not done, someone else is doing it).
LEASE_LOST_EXIT_CODE = 75

_KEY_RE = re.compile(r"^[A-Za-z0-9._=+@-]+(/[A-Za-z0-9._=+@-]+)*$")


# --------------------------------------------------------------------------------------------
# clocks and process identity


def _clock_source() -> Callable[[], float]:
    """A clock for our own deadlines that never goes backwards and keeps counting while the
    process is stopped or the machine is suspended (CLOCK_BOOTTIME), so a holder that was frozen
    learns it overslept. Falls back to time.monotonic elsewhere."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            time.clock_gettime(boottime)
            return lambda: time.clock_gettime(boottime)
        except OSError:
            pass
    return time.monotonic


_clock = _clock_source()


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None if gone."""
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    try:
        fields = text[text.rindex(")") + 2 :].split()
        return fields[0], int(fields[19])
    except (ValueError, IndexError):
        return None


def _this_machine() -> dict[str, Any]:
    """What identifies this process beyond host and pid: boot id, pid namespace, start time."""
    ident: dict[str, Any] = {}
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    if boot:
        ident["boot"] = boot.strip()
    try:
        ident["pidns"] = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pass
    return ident


_HOST = socket.gethostname()
_START: dict[int, int | None] = {}


def _own_start() -> int | None:
    """This process's start time (clock ticks since boot), cached per pid (fork-safe)."""
    pid = os.getpid()
    if pid not in _START:
        info = _proc_start(pid)
        _START[pid] = info[1] if info else None
    return _START[pid]
_MACHINE = _this_machine()


def _get_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return str(os.getuid())


_USER = _get_user()


def _holder_is_dead_here(body: dict) -> bool:
    """True only when we can prove the writer of `body` is a process on this very machine (same
    host, boot and pid namespace) that no longer exists (gone, a zombie, or its pid reused).
    Anything uncertain counts as alive: the TTL decides then."""
    if body.get("host") != _HOST or not _MACHINE.get("boot"):
        return False
    proc = body.get("proc") or {}
    if proc.get("boot") != _MACHINE.get("boot") or proc.get("pidns") != _MACHINE.get("pidns"):
        return False
    pid, start = body.get("pid"), proc.get("start")
    if not isinstance(pid, int) or not isinstance(start, int):
        return False
    now = _proc_start(pid)
    if now is None:
        return True
    state, started = now
    return state in ("Z", "X") or started != start


# --------------------------------------------------------------------------------------------
# what users see


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lease. Times are the holder's wall clock (seconds since epoch)."""

    owner: str  # unique per acquisition (uuid4 hex)
    host: str
    pid: int
    since: float  # when this owner acquired it
    expires: float  # when it goes stale unless renewed
    epoch: int  # +1 on every change of owner: a fencing token
    user: str = ""
    note: str = ""  # what the holder is doing, e.g. the target label

    def describe(self, now: float | None = None) -> str:
        """E.g. 'alice@host7 pid 4242 since 14:03:07 (2m05s ago), expires in 71s [//p:train]'."""
        now = time.time() if now is None else now
        who = f"{self.user}@{self.host}" if self.user else self.host
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        left = self.expires - now
        state = f"expires in {left:.0f}s" if left >= 0 else f"stale for {-left:.0f}s"
        text = f"{who} pid {self.pid} since {since} ({_ago(now - self.since)} ago), {state}"
        return f"{text} [{self.note}]" if self.note else text


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LeaseLost(Exception):
    """We no longer hold the lease (someone else wrote it, or our own deadline passed): stop the
    work and do not publish its result."""


class Conflict(Exception):
    """A compare-and-swap found a different version than expected (or the object already exists)."""


# --------------------------------------------------------------------------------------------
# compare-and-swap objects, one per backend


class CasObject(Protocol):
    """A small object written only by compare-and-swap. `expected=None` means create-if-absent."""

    where: str

    def read(self) -> tuple[bytes, str] | None:
        """(bytes, version), or None when absent."""

    def write(self, data: bytes, expected: str | None) -> str:
        """Write if the current version is `expected` (None: if absent); the new version. Conflict otherwise."""


class LocalObject:
    """A file replaced atomically (temp file + rename) under an exclusive `flock` on `<path>.lock`.

    Readers need no lock (a rename is atomic). The version is a hash of the bytes; every lease body
    has a fresh `rev`, so two writes never share a version. A crash leaves the old or the new file,
    never a torn one (at worst a stray temp file); the kernel drops a dead process's flock.
    """

    def __init__(self, path: Path):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.where = str(path)

    @staticmethod
    def _version(data: bytes) -> str:
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data, self._version(data)

    def write(self, data: bytes, expected: str | None) -> str:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self.read()
            if (current[1] if current else None) != expected:
                raise Conflict(f"{self.where}: version changed")
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            return self._version(data)
        finally:
            os.close(fd)  # releases the flock


class GcsObject:
    """A GCS object through gcsfs's own HTTP session (the filesystem the remote cache uses).

    read: one `GET .../o/<name>?alt=media`, the generation from `x-goog-generation`.
    write: one single-request multipart upload with `ifGenerationMatch=<generation>` (0 = create),
    the kind of upload whose preconditions the emulator honours too; HTTP 412 -> Conflict.
    """

    def __init__(self, fs, bucket: str, name: str, timeout: float | None = None):
        self.fs, self.bucket, self.name, self.timeout = fs, bucket, name, timeout
        self.where = f"gs://{bucket}/{name}"

    def read(self) -> tuple[bytes, str] | None:
        from fsspec.asyn import sync

        try:
            headers, data = sync(self.fs.loop, self.fs._call, "GET", "b/{}/o/{}", self.bucket, self.name, alt="media", timeout=self.timeout)
        except FileNotFoundError:
            return None
        return data, str(headers["x-goog-generation"])

    def write(self, data: bytes, expected: str | None) -> str:
        from fsspec.asyn import sync

        meta = json.dumps({"name": self.name, "contentType": "application/json"})
        body = (
            b'--==0==\nContent-Type: application/json; charset=UTF-8\n\n' + meta.encode()
            + b"\n--==0==\nContent-Type: application/json\n\n" + data + b"\n--==0==--"
        )
        try:
            out = sync(
                self.fs.loop, self.fs._call, "POST", f"{self.fs._location}/upload/storage/v1/b/{self.bucket}/o",
                uploadType="multipart", ifGenerationMatch=expected or "0", data=body, json_out=True,
                headers={"Content-Type": 'multipart/related; boundary="==0=="'}, timeout=self.timeout,
            )
        except FileExistsError as exc:  # gcsfs maps HTTP 412 (precondition failed) to this
            raise Conflict(f"{self.where}: generation is not {expected or 'absent'}") from exc
        return str(out["generation"])


class S3Object:
    """An S3 object through s3fs (the filesystem the remote cache uses).

    read: `GetObject` (bytes and ETag). write: `PutObject` with `IfMatch=<etag>`, or
    `IfNoneMatch="*"` to create. 412 PreconditionFailed, 409 ConditionalRequestConflict, and
    NoSuchKey on an If-Match write -> Conflict. The ETag is an MD5 of the bytes: the `rev` in every
    body keeps versions unique.
    """

    def __init__(self, fs, bucket: str, key: str, timeout: float | None = None):
        self.fs, self.bucket, self.key, self.timeout = fs, bucket, key, timeout
        self.where = f"s3://{bucket}/{key}"

    async def _read(self):
        resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
        body = resp["Body"]
        try:
            data = await body.read()
        finally:
            body.close()
        return data, resp["ETag"]

    def read(self) -> tuple[bytes, str] | None:
        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, self._read, timeout=self.timeout)
        except FileNotFoundError:
            return None

    def write(self, data: bytes, expected: str | None) -> str:
        from fsspec.asyn import sync

        cond = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        try:
            out = sync(
                self.fs.loop, self.fs._call_s3, "put_object", Bucket=self.bucket, Key=self.key, Body=data,
                ContentType="application/json", timeout=self.timeout, **cond,
            )
        except OSError as exc:
            err = getattr(exc.__cause__, "response", {}) or {}
            code = (err.get("Error") or {}).get("Code", "")
            status = (err.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if isinstance(exc, FileExistsError) or code in ("PreconditionFailed", "ConditionalRequestConflict") \
                    or status in (409, 412) or (expected and code == "NoSuchKey"):
                raise Conflict(f"{self.where}: ETag is not {expected or 'absent'}") from exc
            raise
        return out["ETag"]


def _write_resolving(obj: CasObject, data: bytes, expected: str | None, rev: str) -> str:
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
    return not (pid_check and _holder_is_dead_here(body))


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

    def __init__(self, obj: CasObject, key: str, *, ttl: float, margin: float, note: str = "", pid_check: bool = True):
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
        proc = dict(_MACHINE)
        start = _own_start()
        if start is not None:
            proc["start"] = start
        return json.dumps({
            "format": FORMAT, "state": state, "owner": self.owner, "epoch": self.epoch, "rev": rev,
            "host": _HOST, "pid": os.getpid(), "user": _USER, "proc": proc, "since": self.since,
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
            started = _clock()
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
        started = _clock()
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
        return max(0.0, self._deadline - self.margin - _clock())

    def held(self) -> bool:
        """Do we hold it? Not lost, and not past our own deadline minus the safety margin, by our own
        clock (no I/O). Once false, false for good: a lapsed lease must be acquired anew."""
        if self._lost.is_set() or self._version is None:
            return False
        if _clock() >= self._deadline - self.margin:
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

    def __init__(self, location: str, factory: Callable[[str], CasObject], *, ttl: float, margin: float, pid_check: bool):
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
    guard: Callable[[CasObject], CasObject] | None = None,
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
    root, factory = _objects(location, storage_options, fs, timeout)
    if guard is not None:
        objects = factory
        factory = lambda key: guard(objects(key))  # noqa: E731
    return LeaseStore(root, factory, ttl=ttl, margin=margin, pid_check=pid_check)


def cas_object(location: str | os.PathLike, *, storage_options: dict | None = None, fs: Any = None) -> CasObject:
    """The compare-and-swap object at a path or URL (local, gs://, s3://): `write(data, None)` is
    create-if-absent, the final guard for publishing a marker or result exactly once."""
    loc = os.fspath(location)
    proto, sep, rest = loc.partition("://")
    if not sep or proto in ("file", "local"):
        return LocalObject(Path(rest if sep else loc).expanduser().absolute())
    parent, sep, name = loc.rstrip("/").rpartition("/")
    if not name or parent.endswith(":/"):
        raise ValueError(f"no object name in {loc!r}")
    return _objects(parent, storage_options, fs)[1](name)


def _objects(location: str | os.PathLike, storage_options: dict | None, fs: Any, timeout: float | None = None) -> tuple[str, Callable[[str], CasObject]]:
    """(normalised location, key -> CasObject) for a local path / file:// URL, gs:// or s3:// prefix."""
    loc = os.fspath(location)
    proto, sep, rest = loc.partition("://")
    if not sep or proto in ("file", "local"):
        root = Path(rest if sep else loc).expanduser().absolute()
        return str(root), lambda key: LocalObject(root / key)
    bucket, _, prefix = rest.strip("/").partition("/")
    if not bucket:
        raise ValueError(f"location {loc!r} names no bucket")
    prefix = prefix.strip("/")

    def name(key: str) -> str:
        return f"{prefix}/{key}" if prefix else key

    if proto in ("gs", "gcs"):
        gfs = fs or _filesystem("gs", storage_options)
        return f"gs://{bucket}/{prefix}".rstrip("/"), lambda key: GcsObject(gfs, bucket, name(key), timeout)
    if proto in ("s3", "s3a"):
        sfs = fs or _filesystem("s3", storage_options)
        return f"s3://{bucket}/{prefix}".rstrip("/"), lambda key: S3Object(sfs, bucket, name(key), timeout)
    raise ValueError(f"leases need a local path, gs:// or s3:// location, not {proto}://")


def _filesystem(protocol: str, storage_options: dict | None):
    import fsspec

    return fsspec.filesystem(protocol, **(storage_options or {}))


# --------------------------------------------------------------------------------------------
# heartbeat


class Heartbeat:
    """Keep a held lease alive while work runs, and say so at once when it is lost.

    Renewals happen every `interval` (sooner after a failed attempt) and a watchdog wakes at our
    deadline. Both are two threads shared by every heartbeat of the process (starting and joining
    threads per action costs milliseconds on a loaded machine). On loss (LeaseLost from a
    renewal, or the deadline passing because renewals failed or hung, or the process was frozen)
    it sets `.lost`, marks the lease lost and calls every `on_lost` callback once, from the
    service thread. It does not release the lease: the caller does, after the work.
    """

    def __init__(self, lease: Lease, interval: float | None = None, on_lost: Callable[[], None] | None = None):
        self.lease = lease
        self.interval = lease.ttl / 3 if interval is None else interval
        if not 0 < self.interval < lease.ttl - lease.margin:
            raise ValueError(f"renew interval {self.interval}s must be below ttl - margin ({lease.ttl - lease.margin:.2f}s)")
        self.lost = threading.Event()
        self.renewals = 0
        self.last_error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = [on_lost] if on_lost else []
        self._mu = threading.Lock()
        self._stopped = False
        self._renewing = threading.Lock()  # held while a renewal of this lease is in flight
        self.next_renewal = 0.0

    def held(self) -> bool:
        return not self.lost.is_set() and self.lease.held()

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still held (call immediately before publishing)."""
        if not self.held():
            raise LeaseLost(f"lease {self.lease.where} is no longer held (epoch {self.lease.epoch})")

    def add_on_lost(self, callback: Callable[[], None]) -> None:
        """Another callback for the loss; called at once (in this thread) if it already happened."""
        with self._mu:
            if not self.lost.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def remove_on_lost(self, callback: Callable[[], None]) -> None:
        with self._mu:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def _fire(self) -> None:
        with self._mu:
            if self.lost.is_set():
                return
            self.lost.set()
            self.lease.mark_lost()
            callbacks = [] if self._stopped else list(self._callbacks)
        log.warning("lost lease %s (epoch %d)", self.lease.where, self.lease.epoch)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("on_lost callback failed")

    def _renew(self) -> None:
        """One renewal (from the service's renewer thread)."""
        with self._renewing:
            if self._stopped:
                return
            try:
                self.lease.renew()
                self.renewals += 1
                self.last_error = None
                self.next_renewal = _clock() + self.interval
            except LeaseLost:
                self.next_renewal = math.inf  # nothing left to renew
                if not self._stopped:
                    self._fire()
                return
            except Exception as exc:  # the store is unreachable: retry sooner, until the deadline
                self.last_error = exc
                log.warning("renewing lease %s failed: %s", self.lease.where, exc)
                self.next_renewal = _clock() + min(self.interval, max(0.05, self.lease.remaining() / 4))
        if not self.lease.held():
            self.next_renewal = math.inf
            if not self._stopped:
                self._fire()

    def __enter__(self) -> Heartbeat:
        if not self.lease.held():
            raise LeaseLost(f"lease {self.lease.where} is not held")
        self.next_renewal = _clock() + self.interval
        _service.add(self)
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def stop(self) -> None:
        """Stop renewing. Waits for a renewal in flight (never for threads to end)."""
        with self._mu:
            self._stopped = True
        _service.remove(self)
        if self._renewing.acquire(timeout=1.0):  # a renewal stuck in I/O is left to finish on its own
            self._renewing.release()


class _HeartbeatService:
    """The two threads every Heartbeat of this process shares: a renewer (does the store I/O) and a
    watchdog (no I/O, so a hung renewal cannot delay noticing that a deadline passed)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._beats: set[Heartbeat] = set()
        self._started = False
        # When each thread will next wake on its own: a new heartbeat wakes them only if it is due sooner.
        self._renew_wake = self._watch_wake = math.inf

    def add(self, beat: Heartbeat) -> None:
        with self._cv:
            self._beats.add(beat)
            if not self._started:
                for target in (self._renewer, self._watchdog):
                    threading.Thread(target=target, name=f"lease-{target.__name__[1:]}", daemon=True).start()
                self._started = True
            if beat.next_renewal < self._renew_wake or _clock() + beat.lease.remaining() < self._watch_wake:
                self._cv.notify_all()

    def remove(self, beat: Heartbeat) -> None:
        with self._cv:  # no wake-up: a thread that finds nothing to do goes back to sleep
            self._beats.discard(beat)

    def _renewer(self) -> None:
        while True:
            with self._cv:
                now = _clock()
                due = [b for b in self._beats if b.next_renewal <= now]
                if not due:
                    self._renew_wake = min((b.next_renewal for b in self._beats), default=math.inf)
                    self._cv.wait(None if self._renew_wake == math.inf else max(0.0, self._renew_wake - now))
                    self._renew_wake = math.inf
                    continue
            for beat in due:
                beat._renew()

    def _watchdog(self) -> None:
        while True:
            with self._cv:
                now = _clock()
                beats = [b for b in self._beats if not b.lost.is_set()]
                expired = [b for b in beats if b.lease.remaining() <= 0]
                if not expired:
                    self._watch_wake = min((now + b.lease.remaining() for b in beats), default=math.inf)
                    self._cv.wait(None if self._watch_wake == math.inf else self._watch_wake - now + 0.001)
                    self._watch_wake = math.inf
                    continue
            for beat in expired:
                if not beat._stopped:
                    beat._fire()


_service = _HeartbeatService()


__all__ = [
    "DEFAULT_RENEW", "DEFAULT_TTL", "LEASE_LOST_EXIT_CODE", "Conflict", "Heartbeat", "Holder", "Lease", "LeaseLost",
    "LeaseStore", "cas_object", "open_leases",
]
