"""The local database (LMDB): action cache, source-digest cache, and per-label build records.

Many mbuild processes (builders, workers) may open it at once: LMDB serialises writers and gives
readers consistent snapshots.

Durability: commits are not fsynced one by one (an fsync costs ~2.5 ms here and would serialise
every action's publish); a build syncs once at its end. A killed process loses nothing (the page
cache survives it). An OS crash may lose the last entries or damage the file: every record is
checksummed and every blob verified on use, so damage reads as a miss, and a database LMDB
cannot open is moved aside and started afresh. The cache is a cache: it never serves a wrong result.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lmdb
import orjson

from ..digests import digest_bytes, digest_file
from ..errors import CacheCorruptError
from ..results import ActionResult

_MAP_SIZE = 1 << 40  # address space only; the file grows as needed
# Don't trust the stat cache for files modified this recently (same-tick edits are invisible to mtime).
_RACY_NS = 2_000_000_000


class LocalDB:
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        _allocate_lock_file(directory)
        try:
            self.env = _open(directory)
        except (lmdb.CorruptedError, lmdb.InvalidError, lmdb.VersionMismatchError, lmdb.PageNotFoundError, lmdb.BadChecksumError) as exc:
            aside = directory.with_name(f"{directory.name}.damaged-{int(time.time())}")
            os.replace(directory, aside)
            warnings.warn(f"local cache database {directory} could not be opened ({exc}); moved it to {aside} and started a new one")
            directory.mkdir()
            _allocate_lock_file(directory)
            self.env = _open(directory)
        self.env.reader_check()  # clear reader slots of processes that died
        self.ac = self.env.open_db(b"ac")  # action key -> ActionResult JSON
        self.srcstat = self.env.open_db(b"srcstat")  # absolute path -> [size, mtime_ns, ino, ctime_ns, digest]
        self.label_keys = self.env.open_db(b"label_keys")  # label -> the key it last built or hit
        self.labels = self.env.open_db(b"labels")  # label -> the parts of that key, for explanations
        self.failures = self.env.open_db(b"failures")  # action key -> its last failure (never a result)
        self.leases = self.env.open_db(b"leases")  # action key -> 16-byte version + lease body

    def close(self) -> None:
        self.env.close()

    def sync(self) -> None:
        """Flush committed transactions to disk (once per build)."""
        self.env.sync(True)

    # --- action cache ----------------------------------------------------------------------------

    def get_result(self, key: str) -> bytes | None:
        with self.env.begin(db=self.ac) as txn:
            return txn.get(key.encode())

    def valid_result(self, key: str, on_corrupt: Callable[[str, CacheCorruptError], None] | None = None) -> ActionResult | None:
        """The cached result for `key`, validated; a corrupt entry is dropped (a miss), never returned."""
        data = self.get_result(key)
        if data is None:
            return None
        try:
            return ActionResult.from_record(data)
        except CacheCorruptError as exc:
            self.delete_result(key)
            if on_corrupt is not None:
                on_corrupt(key, exc)
            return None

    def put_result(self, key: str, data: bytes) -> bool:
        """Publish a result if none exists for the key (create-if-absent); False if one did."""
        with self.env.begin(db=self.ac, write=True) as txn:
            return txn.put(key.encode(), data, overwrite=False)

    def delete_result(self, key: str) -> None:
        with self.env.begin(db=self.ac, write=True) as txn:
            txn.delete(key.encode())

    # --- failures ---------------------------------------------------------------------------------

    def record_failure(self, key: str, failure: dict) -> None:
        with self.env.begin(db=self.failures, write=True) as txn:
            txn.put(key.encode(), orjson.dumps(failure))

    def get_failure(self, key: str) -> dict | None:
        with self.env.begin(db=self.failures) as txn:
            data = txn.get(key.encode())
        try:
            return orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return None

    def clear_failure(self, key: str) -> None:
        with self.env.begin(db=self.failures, write=True) as txn:
            txn.delete(key.encode())

    # --- leases: compare-and-swap records -------------------------------------------------------

    def lease_object(self, key: str) -> LmdbObject:
        return LmdbObject(self, key)

    # --- per-label records ----------------------------------------------------------------------

    def get_label(self, label: str) -> dict | None:
        with self.env.begin(db=self.labels) as txn:
            data = txn.get(label.encode())
        return orjson.loads(data) if data else None

    def changed_labels(self, keys: dict[str, str]) -> list[str]:
        """Labels whose key differs from the one recorded for them."""
        with self.env.begin(db=self.label_keys) as txn:
            return [label for label, key in keys.items() if txn.get(label.encode()) != key.encode()]

    def put_labels(self, records: dict[str, dict]) -> None:
        """Record each label's key and its parts (`records[label]["key"]`)."""
        if not records:
            return
        with self.env.begin(write=True) as txn:
            for label, record in records.items():
                txn.put(label.encode(), record["key"].encode(), db=self.label_keys)
                txn.put(label.encode(), orjson.dumps(record), db=self.labels)

    # --- source digests --------------------------------------------------------------------------

    def source_digests(self, paths: list[str]) -> list[str]:
        """Content digests of source files, reusing earlier hashes when size, mtime, inode and ctime match."""
        digests: list[str] = []
        fresh: dict[bytes, bytes] = {}
        with self.env.begin(db=self.srcstat) as txn:
            for path in paths:
                st = os.stat(path)
                stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
                key = _path_key(path)
                cached = txn.get(key)
                if cached is not None:
                    record = orjson.loads(cached)
                    if record[:4] == stamp:
                        digests.append(record[4])
                        continue
                digest, _ = digest_file(path)
                digests.append(digest)
                if st.st_mtime_ns < time.time_ns() - _RACY_NS:
                    fresh[key] = orjson.dumps([*stamp, digest])
        if fresh:
            with self.env.begin(db=self.srcstat, write=True) as txn:
                for k, v in fresh.items():
                    txn.put(k, v)
        return digests


_MAX_KEY = 511  # LMDB's largest key


def _path_key(path: str) -> bytes:
    """The stat cache's key for a path: the path itself, or its digest when it is too long for LMDB."""
    key = path.encode()
    return key if len(key) <= _MAX_KEY else b"#" + digest_bytes(key).encode()


# Bigger than LMDB's lock file for max_readers=1024 (64 bytes a reader slot plus a header); LMDB
# keeps a larger file as it is (and allows more readers).
_LOCK_FILE_BYTES = 128 * 1024


def _allocate_lock_file(directory: Path) -> None:
    """Create LMDB's lock file with every block written, unless it exists. LMDB makes it sparse and
    writes it through a memory map: on a full disk that is SIGBUS, here it is an OSError (ENOSPC).
    Made aside and hard-linked into place, so a process already using the file is never disturbed."""
    lock = directory / "lock.mdb"
    if lock.exists():
        return
    tmp = directory / f"lock.mdb.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(_LOCK_FILE_BYTES))
        try:
            os.link(tmp, lock)
        except FileExistsError:
            pass  # another process made it first
    finally:
        tmp.unlink(missing_ok=True)


def _open(directory: Path) -> lmdb.Environment:
    return lmdb.open(
        str(directory), map_size=_MAP_SIZE, max_dbs=8, max_readers=1024, readahead=False, sync=False, metasync=False
    )


class LmdbObject:
    """A lease record in the local database, written only by compare-and-swap.

    One LMDB write transaction reads, compares and writes, so it is atomic across every process
    sharing the cache; a killed process leaves the old or the new record, never a torn one. The
    version is 16 random bytes stored before the body. (Files would cost a file creation per
    write, ~1 ms on these disks; this costs microseconds.)
    """

    def __init__(self, db: LocalDB, key: str):
        self.env, self.dbi, self.key = db.env, db.leases, key.encode()
        self.where = f"{db.env.path()}#leases/{key}"

    def read(self) -> tuple[bytes, str] | None:
        with self.env.begin(db=self.dbi) as txn:
            value = txn.get(self.key)
        return None if value is None else (bytes(value[16:]), bytes(value[:16]).hex())

    def write(self, data: bytes, expected: str | None) -> str:
        from ..leases import Conflict

        version = os.urandom(16)
        with self.env.begin(db=self.dbi, write=True) as txn:
            current = txn.get(self.key)
            if (None if current is None else bytes(current[:16]).hex()) != expected:
                raise Conflict(f"{self.where}: version changed")
            txn.put(self.key, version + data)
        return version.hex()
