"""Content digests: xxh3-128, printed as 32 lowercase hex characters. Used for keys and blobs alike."""

from __future__ import annotations

import os
import re

import xxhash

DIGEST_HEX_LEN = 32
_CHUNK = 1 << 20
_DIGEST_RE = re.compile(r"[0-9a-f]{32}")


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    """xxh3-128 of `data` as hex."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_file(path: str | os.PathLike) -> tuple[str, int]:
    """(xxh3-128 hex, size) of a file's bytes, read in 1 MiB chunks into one reused buffer."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size <= _CHUNK:
            data = os.read(fd, size + 1)
            return xxhash.xxh3_128_hexdigest(data), len(data)
        h = xxhash.xxh3_128()
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        total = 0
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            h.update(view[:n])
            total += n
        return h.hexdigest(), total
    finally:
        os.close(fd)


def is_digest(text: object) -> bool:
    """Whether `text` is a well-formed digest (guards paths built from digests read from a cache)."""
    return isinstance(text, str) and _DIGEST_RE.fullmatch(text) is not None
