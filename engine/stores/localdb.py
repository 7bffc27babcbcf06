"""The local database (LMDB): action cache, source-digest cache, and per-label build records.

Many mbuild processes (builders, workers) may open it at once: LMDB serialises writers and gives
readers consistent snapshots. Every write is its own durable transaction.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lmdb
import orjson

from ..digests import digest_file

_MAP_SIZE = 1 << 40  # address space only; the file grows as needed
# Don't trust the stat cache for files modified this recently (same-tick edits are invisible to mtime).
_RACY_NS = 2_000_000_000


class LocalDB:
    def __init__(self, directory: Path, readonly: bool = False):
        directory.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(directory), map_size=_MAP_SIZE, max_dbs=8, max_readers=1024, readahead=False, readonly=readonly
        )
        self.env.reader_check()  # clear reader slots of processes that died
        self.ac = self.env.open_db(b"ac")  # action key -> ActionResult JSON
        self.srcstat = self.env.open_db(b"srcstat")  # absolute path -> [size, mtime_ns, ino, ctime_ns, digest]
        self.labels = self.env.open_db(b"labels")  # label -> last key and its parts, for explanations

    def close(self) -> None:
        self.env.close()

    # --- action cache ----------------------------------------------------------------------------

    def get_result(self, key: str) -> bytes | None:
        with self.env.begin(db=self.ac) as txn:
            return txn.get(key.encode())

    def put_result(self, key: str, data: bytes) -> None:
        with self.env.begin(db=self.ac, write=True) as txn:
            txn.put(key.encode(), data)

    def delete_result(self, key: str) -> None:
        with self.env.begin(db=self.ac, write=True) as txn:
            txn.delete(key.encode())

    # --- per-label records ----------------------------------------------------------------------

    def get_label(self, label: str) -> dict | None:
        with self.env.begin(db=self.labels) as txn:
            data = txn.get(label.encode())
        return orjson.loads(data) if data else None

    def put_labels(self, records: dict[str, dict]) -> None:
        if not records:
            return
        with self.env.begin(db=self.labels, write=True) as txn:
            for label, record in records.items():
                txn.put(label.encode(), orjson.dumps(record))

    # --- source digests --------------------------------------------------------------------------

    def source_digests(self, paths: list[str]) -> list[str]:
        """Content digests of source files, reusing earlier hashes when size, mtime, inode and ctime match."""
        digests: list[str] = []
        fresh: dict[bytes, bytes] = {}
        with self.env.begin(db=self.srcstat) as txn:
            for path in paths:
                st = os.stat(path)
                stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
                cached = txn.get(path.encode())
                if cached is not None:
                    record = orjson.loads(cached)
                    if record[:4] == stamp:
                        digests.append(record[4])
                        continue
                digest, _ = digest_file(path)
                digests.append(digest)
                if st.st_mtime_ns < time.time_ns() - _RACY_NS:
                    fresh[path.encode()] = orjson.dumps([*stamp, digest])
        if fresh:
            with self.env.begin(db=self.srcstat, write=True) as txn:
                for k, v in fresh.items():
                    txn.put(k, v)
        return digests

