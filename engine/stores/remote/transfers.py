"""Blobs between the local CAS and the remote CAS (<url>/cas/<digest[:2]>/<digest>), verified.

Blobs are content-addressed: a racing duplicate upload writes the same bytes, so they need no
precondition. Small ones (up to WHOLE_MAX) move as one request each, many at once, within a memory
budget. Large ones are uploaded streamed from the local file (never read whole into memory) and
downloaded as one stream, hashed and written to a temporary file as the bytes arrive. A blob is
installed into the local CAS only once its digest and size are verified; a mismatch is reported,
never used. Bad local bytes are never uploaded. A blob known corrupt remotely is uploaded again.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from mbuild.digests import digest_bytes
from mbuild.errors import BlobUnavailableError
from mbuild.stores.cas import LocalCAS
from mbuild.stores.remote import limits
from mbuild.stores.remote.buffers import Buffer, Sink
from mbuild.stores.remote.calls import Link
from mbuild.stores.remote.existence import missing
from mbuild.stores.remote.outcomes import Corrupt, Failed, Missing, describe

Progress = Callable[[str, int, int], None]  # (digest, bytes done, total bytes)

_EMPTY_DIGEST = digest_bytes(b"")


async def upload_blobs(link: Link, cas: LocalCAS, digests: set[str], progress: Progress | None) -> tuple[int, set[str]]:
    """Returns (bytes sent, the digests not confirmed present remotely afterwards). Blobs known
    corrupt remotely are uploaded again (overwritten with these verified bytes)."""
    if not digests:
        return 0, set()
    absent = await missing(link, digests)
    breaker = link.breaker
    if breaker.is_open():
        return 0, set(digests)
    bad = breaker.health.bad("blob", digests - absent)
    loop = asyncio.get_running_loop()
    sent = 0
    failed: set[str] = set()

    async def one(digest: str) -> None:
        nonlocal sent
        path = cas.path(digest)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            breaker.warn(f"remote cache: blob {digest} is missing from the local store; not uploaded")
            failed.add(digest)
            return
        try:
            if size <= limits.WHOLE_MAX:
                n = await link.budget.acquire(size)
                try:
                    data = await loop.run_in_executor(None, _read_verified, cas, digest)
                    await link.call(f"uploading cas/{digest}", lambda: link.backend.write(link.blob(digest), data), nbytes=size, missing_ok=False, write=True)
                finally:
                    await link.budget.release(n)
            else:
                async with link.large_uploads:
                    await loop.run_in_executor(None, cas.verify, digest, size)  # never upload bad bytes
                    report = throttled(progress, digest, size)
                    await link.call(
                        f"uploading cas/{digest}",
                        lambda: link.backend.upload_file(str(path), link.blob(digest), size, report),
                        nbytes=size, missing_ok=False, write=True,
                    )
                    if report:
                        report(size, final=True)
        except BlobUnavailableError as exc:
            breaker.warn(f"remote cache: not uploading {exc}")
            failed.add(digest)
            return
        except (Failed, Missing):
            failed.add(digest)
            return
        sent += size
        link.stats.bytes_up += size
        link.stats.blobs_uploaded += 1
        if digest in bad:
            breaker.health.healed("blob", [digest])

    await asyncio.gather(*(one(d) for d in sorted(absent | bad)))
    return sent, failed


async def fetch_blobs(link: Link, cas: LocalCAS, todo: dict[str, int], progress: Progress | None) -> tuple[int, dict[str, str]]:
    """Download (digest -> size) into the local CAS: (bytes received, digest -> why it was not)."""
    problems: dict[str, str] = {}
    outcome = {"received": 0}

    async def one(digest: str, size: int) -> None:
        try:
            if size == 0:
                if digest != _EMPTY_DIGEST:
                    raise Corrupt(f"size 0 cannot hash to {digest}")
                tmp = _new_tmp(cas)
                tmp.touch()
                cas.install(tmp, digest)
            elif size <= limits.WHOLE_MAX:
                await _fetch_whole(link, cas, digest, size)
            else:
                await _fetch_streamed(link, cas, digest, size, progress)
        except Missing:
            problems[digest] = "missing from the remote cache"
            return
        except Failed as exc:
            problems[digest] = f"remote cache unavailable: {exc}"
            return
        except Corrupt as exc:
            problems[digest] = f"corrupt in the remote cache: {exc}; not used"
            link.breaker.corrupt("blob", digest, f"remote cache: blob {digest} is corrupt ({exc}); not used")
            return
        outcome["received"] += size
        link.stats.blobs_fetched += 1

    await asyncio.gather(*(one(d, s) for d, s in todo.items()))
    return outcome["received"], problems


async def _fetch_whole(link: Link, cas: LocalCAS, digest: str, size: int) -> None:
    """One small blob into memory (within the budget), verified, then written and installed."""
    n = await link.budget.acquire(size)
    try:
        buf = Buffer(size)
        try:
            await link.call(f"reading cas/{digest}", lambda: link.backend.stream_to(link.blob(digest), buf), nbytes=size)
        finally:
            link.stats.bytes_down += buf.received
        data = buf.data
        if len(data) < size:
            raise Corrupt(f"truncated: {len(data)} bytes, expected {size}")
        if len(data) > size:
            raise Corrupt(f"longer than the expected {size} bytes")
        actual = digest_bytes(data)
        if actual != digest:
            raise Corrupt(f"content hashes to {actual}")
        tmp = _new_tmp(cas)
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            cas.install(tmp, digest)
        except BaseException:
            _unlink(tmp)
            raise
    finally:
        await link.budget.release(n)


async def _fetch_streamed(link: Link, cas: LocalCAS, digest: str, size: int, progress: Progress | None) -> None:
    """One streamed GET, hashed and written to a temp file as it arrives; installed once verified."""
    path = link.blob(digest)
    tmp = _new_tmp(cas)
    sink = Sink(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), size, throttled(progress, digest, size))
    try:
        try:
            await link.call(f"reading cas/{digest}", lambda: link.backend.stream_to(path, sink), nbytes=size)
        finally:
            await sink.abandon()
            sink.close()
            link.stats.bytes_down += sink.done
        if sink.done < size:
            raise Corrupt(f"truncated: {sink.done} bytes, expected {size}")
        if sink.done > size:
            raise Corrupt(f"longer than the expected {size} bytes")
        actual = sink.hasher.hexdigest()
        if actual != digest:
            raise Corrupt(f"content hashes to {actual}")
        cas.install(tmp, digest)
    finally:
        sink.close()
        _unlink(tmp)


class Budget:
    """Bytes of memory handed out to transfers (asyncio; used on the store's loop only)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> int:
        n = min(n, self.limit)
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    async def release(self, n: int) -> None:
        if n:
            async with self._cond:
                self.used -= n
                self._cond.notify_all()


def guarded(progress: Progress | None, warn: Callable[[str], None]) -> Progress | None:
    """`progress`, or None; after it first raises, it is not called again (and that is said once)."""
    if progress is None:
        return None
    state = {"ok": True}

    def safe(digest: str, done: int, total: int) -> None:
        if state["ok"]:
            try:
                progress(digest, done, total)
            except Exception as exc:
                state["ok"] = False
                warn(f"remote cache: progress callback failed ({describe(exc)}); no more progress reports")

    return safe


def throttled(progress: Progress | None, digest: str, total: int):
    """A progress reporter for one blob: at most once per PROGRESS_STEP, and at the end."""
    if progress is None or total < limits.PROGRESS_MIN:
        return None
    state = {"last": -limits.PROGRESS_STEP, "final": False}

    def report(done: int, final: bool = False) -> None:
        if state["final"]:
            return
        if done >= total or final:
            state["final"] = True
            progress(digest, total, total)
        elif done - state["last"] >= limits.PROGRESS_STEP:
            state["last"] = done
            progress(digest, done, total)

    return report


def _new_tmp(cas: LocalCAS) -> Path:
    return cas.tmp / f"fetch-{uuid.uuid4().hex}"


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_verified(cas: LocalCAS, digest: str) -> bytes:
    return cas.read_verified(digest)
