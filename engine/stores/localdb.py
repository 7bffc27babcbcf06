"""The local database (LMDB): action cache, source-digest cache, tree stamps, per-label records, leases.

Many mbuild processes (builders, workers) may open it at once: LMDB serialises writers and gives
readers consistent snapshots.

Durability: commits are not fsynced one by one (an fsync costs ~2.5 ms here and would serialise
every action's publish); a build syncs once at its end. A killed process loses nothing (the page
cache survives it). An OS crash may lose the last entries or damage the file. Damage never
serves a wrong result and never bricks the workspace:
- every result record is checksummed (with the key it answers) and every blob verified on use,
  so damaged values read as misses;
- a database that cannot be opened, that is shorter than its own header says (a truncated file
  would kill the process with SIGBUS on first touch), whose `db/` is not a directory, or that
  raises a corruption error (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, ...) while in use, is moved aside
  (`db.damaged-<time>`) with one warning and started afresh: the next build reruns or refetches;
- LMDB itself can kill the process on rare damage it does not check for (an assertion, or a read
  past the end of the file). So the whole database is first read through in a child process, and
  moved aside if the child dies or reports damage, whenever damage is likely: on the first open
  after the machine restarted (an OS crash is what tears unsynced pages; the boot id is kept in
  `db/boot_id`), and when a process died with the database open (it leaves its mark in
  `db/holders/`, localdb_holders.py, and often a stale reader slot: this heals a database that
  killed its reader on the previous run).
A cache directory that cannot be written (a read-only mount, no permission) is opened read-only:
hits are served, nothing new is recorded, and the caller is told once (`read_only`).

This module is over 400 lines because every table's accessors share one transaction and healing
path (`read`/`write`); the checks before opening live in localdb_checks.py and localdb_holders.py.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import orjson

from mbuild.digests import digest_bytes, digest_file
from mbuild.errors import CacheCorruptError, DiskFullError, MbuildError, StaleRecordFormat, disk_full
from mbuild.stores.localdb_checks import (
    DAMAGE, Truncated, allocate_lock_file, boot_id, describe, inode_of, is_permission, not_a_database_dir, probe, record_boot,
    recorded_boot, truncated,
)
from mbuild.stores.localdb_holders import HolderMark, died_holding
from mbuild.stores.remote_health import RemoteHealth
from mbuild.stores.srcstat import path_key, srcstat_check, srcstat_record
from mbuild.stores.results import ActionResult

_MAP_SIZE = 1 << 40  # address space only; the file grows as needed
# Don't trust the stat cache for files modified this recently (same-tick edits are invisible to mtime).
_RACY_NS = 2_000_000_000
_TABLES = (b"ac", b"srcstat", b"label_keys", b"labels", b"failures", b"leases", b"treestat", b"remote", b"noop", b"uses")


class CacheDamaged(MbuildError):
    """The local database stayed unusable after being moved aside and recreated."""


@dataclass
class _Handle:
    """One open environment and its tables (swapped whole when a damaged database is replaced)."""

    env: lmdb.Environment
    tables: dict[bytes, Any]  # name -> dbi, or None when read-only and the table never existed
    inode: int  # of data.mdb when opened: tells whether another process replaced the database


class LocalDB:
    def __init__(self, directory: Path, on_warning: Callable[[str], None] | None = None):
        self.directory = directory
        self.read_only = False
        self._warn_fn = on_warning
        self._lock = threading.Lock()
        self._mark = HolderMark(directory)  # placed once open: says whether this process died with it open
        self._h = self._open()

    # --- opening and healing ----------------------------------------------------------------------

    def _open(self) -> _Handle:
        problem = not_a_database_dir(self.directory)
        fresh = not os.path.exists(self.directory / "data.mdb")
        if problem is None:
            try:
                handle, stale = self._open_env()
            except Truncated as exc:
                problem = str(exc)
            except (lmdb.Error, OSError) as exc:
                if disk_full(exc):
                    raise
                if is_permission(exc):
                    return self._open_read_only()
                problem = f"it could not be opened ({describe(exc)})"
            else:
                booted = boot_id()
                died = died_holding(self.directory)  # always: it also clears the marks of the dead
                if not fresh and (stale or died or recorded_boot(self.directory) != booted):
                    problem = probe(self.directory)
                if problem is None:
                    record_boot(self.directory, booted)
                    self._mark.place()
                    return handle
                handle.env.close()
        self._move_aside(problem)
        handle, _ = self._open_env()
        record_boot(self.directory, boot_id())
        self._mark = HolderMark(self.directory)
        self._mark.place()
        return handle

    def _open_env(self) -> tuple[_Handle, int]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if is_permission(exc) and self.directory.is_dir():
                raise lmdb.ReadonlyError(str(exc)) from None
            raise
        allocate_lock_file(self.directory)
        env = lmdb.open(
            str(self.directory), map_size=_MAP_SIZE, max_dbs=16, max_readers=1024, readahead=False, sync=False, metasync=False
        )
        try:
            problem = truncated(env, self.directory)  # before any page is touched: that would be SIGBUS
            if problem is not None:
                raise Truncated(problem)
            stale = env.reader_check()  # clears slots of processes that died with the database open
            tables = {name: env.open_db(name) for name in _TABLES}
        except BaseException:
            env.close()
            raise
        return _Handle(env, tables, inode_of(self.directory)), stale

    def _open_read_only(self) -> _Handle:
        """A cache on a read-only mount, or one this user may not write: serve what is there."""
        self.read_only = True
        try:
            env = lmdb.open(str(self.directory), map_size=_MAP_SIZE, max_dbs=16, readonly=True, lock=False, readahead=False)
        except lmdb.Error as exc:
            raise CacheDamaged(f"local cache database {self.directory} is read-only and cannot be opened ({describe(exc)})") from None
        tables: dict[bytes, Any] = {}
        for name in _TABLES:
            try:
                tables[name] = env.open_db(name, create=False)
            except lmdb.Error:
                tables[name] = None  # made by a newer mbuild than the one that wrote this cache
        return _Handle(env, tables, inode_of(self.directory))

    def _move_aside(self, problem: str) -> None:
        aside = self.directory.with_name(f"{self.directory.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            os.replace(self.directory, aside)
        except FileNotFoundError:
            pass  # another process moved it first
        self._warn(f"local cache database {self.directory} is damaged ({problem}); moved it to {aside.name} and started a new one (what it held will rerun or be fetched again)")

    def _heal(self, handle: _Handle, exc: BaseException) -> None:
        """A damage error while in use: replace the database, unless another thread or process did."""
        with self._lock:
            if self._h is not handle:
                return
            if inode_of(self.directory) == handle.inode:
                self._move_aside(describe(exc))
            self._h, _ = self._open_env()
            self._mark.remove()  # it went aside with the old database
            self._mark = HolderMark(self.directory)
            self._mark.place()
            # The old environment is not closed: other threads may still hold its transactions.

    def _warn(self, message: str) -> None:
        if self._warn_fn is not None:
            self._warn_fn(message)
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def read(self, table: bytes, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """fn(txn) in a read transaction of `table`, healing a damaged database once (for the table
        accessors of the stores layer, e.g. RemoteHealth)."""
        for attempt in (0, 1):
            h = self._h
            dbi = h.tables[table]
            if dbi is None:
                return default
            try:
                with h.env.begin(db=dbi) as txn:
                    return fn(txn)
            except DAMAGE as exc:
                if attempt:
                    raise CacheDamaged(f"local cache database {self.directory} is unusable: {describe(exc)}") from None
                self._heal(h, exc)
        return default

    def write(self, table: bytes | None, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """fn(txn) in a write transaction of `table` (fn(txn, tables) for several, with table None);
        a no-op returning `default` on a read-only cache."""
        if self.read_only:
            return default
        for attempt in (0, 1):
            h = self._h
            try:
                with h.env.begin(db=h.tables[table] if table else None, write=True) as txn:
                    return fn(txn) if table else fn(txn, h.tables)
            except DAMAGE as exc:
                if attempt:
                    raise CacheDamaged(f"local cache database {self.directory} is unusable: {describe(exc)}") from None
                self._heal(h, exc)
            except lmdb.DiskError as exc:
                raise DiskFullError.of(exc, str(self.directory)) from None
            except lmdb.ReadonlyError:
                self.read_only = True
                return default
        return default

    def close(self) -> None:
        self._h.env.close()
        self._mark.remove()

    def sync(self) -> None:
        """Flush committed transactions to disk (once per build)."""
        if self.read_only:
            return
        try:
            self._h.env.sync(True)
        except lmdb.DiskError as exc:
            raise DiskFullError.of(exc, str(self.directory)) from None

    def last_txn(self) -> int:
        """The id of the last committed write transaction (by any process): unchanged means nothing was written."""
        return self._h.env.info()["last_txnid"]

    @property
    def path(self) -> str:
        return str(self.directory)

    # --- action cache ----------------------------------------------------------------------------

    def get_result(self, key: str) -> bytes | None:
        return self.read(b"ac", lambda txn: txn.get(key.encode()))

    def valid_result(self, key: str, on_corrupt: Callable[[str, CacheCorruptError], None] | None = None) -> ActionResult | None:
        """The cached result for `key`, validated; a corrupt entry is dropped (a miss), never returned."""
        data = self.get_result(key)
        if data is None:
            return None
        try:
            return ActionResult.from_record(data, key)
        except CacheCorruptError as exc:
            self.delete_result(key)
            if on_corrupt is not None and not isinstance(exc, StaleRecordFormat):
                on_corrupt(key, exc)
            return None

    def put_result(self, key: str, result: ActionResult) -> bool:
        """Publish a result for `key` if none exists (create-if-absent); False if one did."""
        record = result.to_record(key)
        return self.write(b"ac", lambda txn: txn.put(key.encode(), record, overwrite=False), default=False)

    def result_records(self) -> list[tuple[str, bytes]]:
        """Every (key, record) in the action cache, unvalidated (for audits and maintenance)."""
        return self.read(b"ac", lambda txn: [(bytes(k).decode("ascii", "replace"), bytes(v)) for k, v in txn.cursor()], [])

    def delete_result(self, key: str) -> None:
        self.write(b"ac", lambda txn: txn.delete(key.encode()))

    # --- tree stamps ------------------------------------------------------------------------------

    def result_records_for(self, keys: list[str]) -> list[bytes | None]:
        """The stored records of `keys`, in one read transaction (not validated: callers compare
        their digests with what they recorded, or validate them)."""
        return self.read(b"ac", lambda txn: [txn.get(k.encode()) for k in keys], default=[None] * len(keys))

    # --- the no-op record of each request (schedule/noop.py) -------------------------------------

    def get_noop(self, request: str) -> bytes | None:
        """The no-op record of `request`, if its checksum vouches for it."""
        data = self.read(b"noop", lambda txn: txn.get(request.encode()))
        if data is None or len(data) < 33 or digest_bytes(bytes(data[33:])).encode() != bytes(data[:32]):
            return None
        return bytes(data[33:])

    def put_noop(self, request: str, body: bytes) -> None:
        record = digest_bytes(body).encode() + b"\n" + body
        self.write(b"noop", lambda txn: txn.put(request.encode(), record))

    def tree_stamps(self, tree: str) -> list[int] | None:
        """The stamps recorded when the local tree `tree` last hashed right (see stores/trees.py)."""
        data = self.read(b"treestat", lambda txn: txn.get(tree.encode()))
        if data is None:
            return None
        try:
            stamps = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return stamps if isinstance(stamps, list) else None

    def put_tree_stamps(self, tree: str, stamps: list[int]) -> None:
        data = orjson.dumps(stamps)
        self.write(b"treestat", lambda txn: txn.put(tree.encode(), data))

    # --- failures ---------------------------------------------------------------------------------

    def record_failure(self, key: str, failure: dict) -> None:
        data = orjson.dumps(failure)
        self.write(b"failures", lambda txn: txn.put(key.encode(), data))

    def get_failure(self, key: str) -> dict | None:
        data = self.read(b"failures", lambda txn: txn.get(key.encode()))
        try:
            failure = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return None
        return failure if isinstance(failure, dict) else None

    def clear_failure(self, key: str) -> None:
        self.write(b"failures", lambda txn: txn.delete(key.encode()))

    # --- leases: compare-and-swap records -------------------------------------------------------

    def lease_record(self, key: str) -> tuple[bytes, str] | None:
        """(body, version) of the lease record of `key`; the version is 16 random bytes stored first."""
        value = self.read(b"leases", lambda txn: txn.get(key.encode()))
        return None if value is None else (bytes(value[16:]), bytes(value[:16]).hex())

    def swap_lease_record(self, key: str, data: bytes, expected: str | None) -> str | None:
        """Write `data` as the lease record of `key` if its version is still `expected` (None: absent),
        in one write transaction (atomic across every process sharing the cache). The new version,
        or None when the version had changed (or the cache is read-only)."""
        version, name = os.urandom(16), key.encode()

        def cas(txn) -> bool:
            current = txn.get(name)
            if (None if current is None else bytes(current[:16]).hex()) != expected:
                return False
            txn.put(name, version + data)
            return True

        return version.hex() if self.write(b"leases", cas, default=False) else None

    # --- the remote cache's health, shared by a build's processes -------------------------------

    def remote_health(self, url: str, build: str) -> RemoteHealth:
        return RemoteHealth(self, url, build)

    def entries(self) -> dict[str, int]:
        """How many records each table holds (`mbuild info`)."""
        return {name.decode(): self.read(name, lambda txn, name=name: txn.stat(self._h.tables[name])["entries"], 0) for name in _TABLES}

    # --- per-label records ----------------------------------------------------------------------

    def get_label(self, label: str) -> dict | None:
        data = self.read(b"labels", lambda txn: txn.get(label.encode()))
        try:
            record = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return None
        return record if isinstance(record, dict) else None

    def changed_labels(self, keys: dict[str, str]) -> list[str]:
        """Labels whose key differs from the one recorded for them."""
        return self.read(
            b"label_keys", lambda txn: [label for label, key in keys.items() if txn.get(label.encode()) != key.encode()], list(keys)
        )

    def put_labels(self, records: dict[str, dict]) -> None:
        """Record each label's key and its parts (`records[label]["key"]`)."""
        if not records:
            return
        def put(txn, tables) -> None:
            for label, record in records.items():
                txn.put(label.encode(), record["key"].encode(), db=tables[b"label_keys"])
                txn.put(label.encode(), orjson.dumps(record), db=tables[b"labels"])

        self.write(None, put)

    # --- source digests --------------------------------------------------------------------------

    def source_digests(self, paths: list[str]) -> list[str]:
        """Content digests of source files, reusing earlier hashes when size, mtime, inode and ctime
        match (the record's own checksum must match too: a damaged record is hashed again)."""
        fresh: dict[bytes, bytes] = {}

        def look(txn) -> list[str]:
            digests: list[str] = []
            for path in paths:
                st = os.stat(path)
                stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
                key = path_key(path)
                cached = txn.get(key)
                if cached is not None:
                    record = srcstat_record(path, cached)
                    if record is not None and record[:4] == stamp:
                        digests.append(record[4])
                        continue
                digest, _ = digest_file(path)
                digests.append(digest)
                if st.st_mtime_ns < time.time_ns() - _RACY_NS and st.st_ctime_ns < time.time_ns() - _RACY_NS:
                    body = [*stamp, digest]
                    fresh[key] = orjson.dumps([*body, srcstat_check(path, body)])
            return digests

        fresh.clear()
        digests = self.read(b"srcstat", look)
        if fresh:
            self.write(b"srcstat", lambda txn: [txn.put(k, v) for k, v in fresh.items()])
        return digests


