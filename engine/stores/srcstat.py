"""The records of the source-stat cache (the local database's `srcstat` table): a source file's
stamp and content digest, with a checksum over both and the path, keyed by the path."""

from __future__ import annotations

import orjson

from mbuild.digests import digest_bytes


def srcstat_check(path: str, body: list) -> str:
    return digest_bytes(path.encode() + b"\0" + orjson.dumps(body))[:16]


def srcstat_record(path: str, data: bytes) -> list | None:
    """A source-stat record if it is intact: [size, mtime_ns, ino, ctime_ns, digest]."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, list) or len(record) != 6 or record[5] != srcstat_check(path, record[:5]):
        return None
    return record[:5]


_MAX_KEY = 511  # LMDB's largest key


def path_key(path: str) -> bytes:
    """The stat cache's key for a path: the path itself, or its digest when it is too long for LMDB."""
    key = path.encode()
    return key if len(key) <= _MAX_KEY else b"#" + digest_bytes(key).encode()
