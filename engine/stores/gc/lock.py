"""The cache lock: running builds share it, a gc batch holds it alone, so nothing a build reads or
builds is collected from under it.

Two flock(2) files in the cache directory. A build takes `gc.intent` shared, then `gc.lock`
shared, and lets go of `gc.intent`: it keeps `gc.lock` until it ends (the kernel drops it if the
process dies). A gc batch takes `gc.intent` exclusive first, so builds that start while it waits
queue behind it instead of starving it, then `gc.lock` exclusive (it waits for running builds to
end), deletes, and lets go of both. Cost to a build: two opens and three flock calls.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mbuild.model.workspace import CACHE_NOTE, claim_directory

LOCK, INTENT = "gc.lock", "gc.intent"


def _open(cache_dir: Path, name: str) -> int:
    return os.open(cache_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextmanager
def shared(cache_dir: Path) -> Iterator[None]:
    """Held by a build for its whole run (the cache directory is made, marked, if missing). A cache
    this process cannot write is not locked: it can neither add to it nor collect from it."""
    try:
        intent = _open(cache_dir, INTENT)
    except FileNotFoundError:
        claim_directory(cache_dir, CACHE_NOTE)
        intent = _open(cache_dir, INTENT)
    except OSError:
        yield
        return
    try:
        fcntl.flock(intent, fcntl.LOCK_SH)
        lock = _open(cache_dir, LOCK)
        fcntl.flock(lock, fcntl.LOCK_SH)
    finally:
        os.close(intent)
    try:
        yield
    finally:
        os.close(lock)


@contextmanager
def exclusive(cache_dir: Path) -> Iterator[None]:
    """Held by one gc batch: no build runs meanwhile, and builds starting meanwhile wait."""
    intent = _open(cache_dir, INTENT)
    try:
        fcntl.flock(intent, fcntl.LOCK_EX)
        lock = _open(cache_dir, LOCK)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)
    finally:
        os.close(intent)
