"""The remote action cache: result records under <url>/ac/<key>.

Records are small control objects. Each is written in one request with a create-if-absent
precondition (GCS `ifGenerationMatch=0`, S3 `If-None-Match: *`, file:// a hard link of a finished
temporary file), so concurrent publishers never tear an entry: one wins, the others learn it
existed, and a reader sees all of an entry or nothing. A record is read bounded by MAX_RECORD,
its checksum checked and its tree digest recomputed from the content; nothing remote is ever
unpickled. A record known corrupt, or naming a blob known corrupt, is replaced by a verified one.
"""

from __future__ import annotations

import asyncio

from mbuild.errors import CacheCorruptError, RecordKeyMismatch
from mbuild.stores.remote import limits
from mbuild.stores.remote.buffers import Buffer
from mbuild.stores.remote.calls import Link
from mbuild.stores.remote.outcomes import Corrupt, Exists, Failed, Missing
from mbuild.stores.results import ActionResult


def parse_record(record: bytes, key: str) -> ActionResult:
    """A result record from elsewhere: size bounded, checksum checked, content validated, tree digest
    recomputed. Raises CacheCorruptError on anything unexpected."""
    if len(record) > limits.MAX_RECORD:
        raise CacheCorruptError(f"action result record is larger than {limits.MAX_RECORD} bytes")
    return ActionResult.from_record(record, key, check_tree=True)


async def read_record(link: Link, key: str) -> bytes:
    """The record's bytes, at most MAX_RECORD + 1 of them. Raises like Link.call."""
    buf = Buffer(limits.MAX_RECORD)
    try:
        await link.call(f"reading ac/{key}", lambda: link.backend.stream_to(link.ac(key), buf), progress=lambda: buf.received)
    finally:
        link.stats.bytes_down += buf.received
    return bytes(buf.data)


async def get_results(link: Link, keys: list[str]) -> dict[str, ActionResult]:
    """The valid results among `keys`, read concurrently; corrupt ones are reported and left out."""

    async def one(key: str):
        try:
            record = await read_record(link, key)
            if len(record) > limits.PARSE_INLINE_MAX:  # parsing a big one must not hold up the loop
                result = await asyncio.get_running_loop().run_in_executor(None, parse_record, record, key)
            else:
                result = parse_record(record, key)
        except (Missing, Failed):
            return None
        except RecordKeyMismatch as exc:
            link.breaker.corrupt("ac", key, f"remote cache: ac/{key} holds the record of another action ({exc.named}): copied or swapped by hand? ignored (a miss)")
            return None
        except (Corrupt, CacheCorruptError) as exc:
            link.breaker.corrupt("ac", key, f"remote cache: action result {key} is corrupt ({exc}); ignored (a miss)")
            return None
        link.stats.results_fetched += 1
        return key, result

    found = await asyncio.gather(*(one(k) for k in keys))
    return dict(item for item in found if item is not None)


async def put_result(link: Link, key: str, result: ActionResult) -> bool:
    """Create the record for `key` if absent (or replace one known bad); True if this call did."""
    record = result.to_record(key)
    try:
        await link.call(
            f"creating ac/{key}", lambda: link.backend.create(link.ac(key), record),
            nbytes=len(record), missing_ok=False, exists_ok=True, write=True,
        )
    except Failed:
        return False
    except Exists:
        if not await _replaceable(link, key, result):
            return False
        try:
            await link.call(
                f"replacing ac/{key}", lambda: link.backend.write(link.ac(key), record),
                nbytes=len(record), missing_ok=False, write=True,
            )
        except Failed:
            return False
        link.breaker.health.healed("ac", [key])
    link.stats.bytes_up += len(record)
    link.stats.results_uploaded += 1
    return True


async def _replaceable(link: Link, key: str, result: ActionResult) -> bool:
    """May the existing record for `key` be replaced by `result` (verified, its blobs uploaded)?
    Only if it is known corrupt, or is corrupt when read now, or names a blob known corrupt
    that `result` does not (a rebuild that made other bytes cannot repair that blob)."""
    health = link.breaker.health
    if not health.any_bad():
        return False
    if health.bad("ac", [key]):
        return True
    try:
        existing = parse_record(await read_record(link, key), key)
    except (Missing, Failed):
        return False
    except (Corrupt, CacheCorruptError):
        return True
    ours = {f.digest for f in result.files}
    stale = health.bad("blob", {f.digest for f in existing.files} - ours)
    if stale:
        health.healed("blob", stale)  # no longer named by this record; others naming it are caught when fetched
    return bool(stale)
