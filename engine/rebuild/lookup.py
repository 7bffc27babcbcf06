"""The one answer to "is there a valid result for this key?", for every caller (the scheduler, the
run-once slot, the fray poller, status, dry runs).

The local action cache first (a record is validated, and must name the key it is read under);
then, for the keys still missing, one batched question to the remote cache, where a hit needs a
valid record and every blob it names present. A remote hit is copied into the local cache, so
the next lookup is local. The bytes themselves are fetched only when someone needs them.

An in-place output is a hit only if its URL, listed now (one batched listing, no download), holds
exactly the recorded manifest. A difference drops the local record and marks the remote one
replaceable (the rerun's result takes its place); without an in-place store to list with (`places`
None), such a result is a miss and nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mbuild.errors import CacheCorruptError, InPlaceChanged
from mbuild.stores.inplace.store import InPlaceStore
from mbuild.stores.localdb import LocalDB
from mbuild.stores.results import ActionResult

if TYPE_CHECKING:
    from mbuild.stores.remote import RemoteCache

OnCorrupt = Callable[[str, CacheCorruptError], None]


@dataclass(frozen=True)
class Found:
    result: ActionResult
    remote: bool = False  # found in the remote cache (and copied into the local one)


def lookup(
    keys: Iterable[str], db: LocalDB, remote: RemoteCache | None = None, on_corrupt: OnCorrupt | None = None,
    places: InPlaceStore | None = None,
) -> dict[str, Found]:
    """The valid results among `keys`: local first, then remote (with `remote`); in-place ones
    listed and compared with their manifest (with `places`)."""
    found: dict[str, Found] = {}
    missing: list[str] = []
    for key in dict.fromkeys(keys):
        result = db.valid_result(key, on_corrupt)
        if result is not None:
            found[key] = Found(result)
        else:
            missing.append(key)
    if missing and remote is not None:
        for key, result in remote.lookup(missing).items():
            db.put_result(key, result)
            found[key] = Found(result, remote=True)
    for key in [k for k, f in found.items() if f.result.place is not None]:
        if places is None:
            del found[key]  # cannot be checked here: a miss, and nothing is dropped
            continue
        result = found[key].result
        place = result.place
        why = places.difference(place)
        if why is None:
            continue
        del found[key]
        label = result.meta.get("label", key)
        message = f"the in-place output of {label} at {place.url} changed ({why}); rebuilding it"
        db.delete_result(key)
        if remote is not None:
            remote.forget(key, message)
        if on_corrupt is not None:
            on_corrupt(key, InPlaceChanged(message))
    return found


def lookup_one(
    key: str, db: LocalDB, remote: RemoteCache | None = None, on_corrupt: OnCorrupt | None = None, places: InPlaceStore | None = None,
) -> Found | None:
    """lookup() for one key."""
    return lookup([key], db, remote, on_corrupt, places).get(key)
