"""The remote cache: action results and blobs in a bucket (gs://, s3://) or a shared directory (file://).

Layout under the configured URL (the same key and digest format as the local cache):

    <url>/ac/<action key>            the action result record, byte for byte ActionResult.to_record()
    <url>/cas/<digest[:2]>/<digest>  blobs by content digest

The modules, one job each:

    config.py     RemoteConfig, and the one parser of remote URLs (also used by the lease objects)
    store.py      RemoteCache: the policy (lookup, publish, fetch; healing corrupt objects)
    records.py    the action cache: result records created if absent, read bounded and checked
    transfers.py  blobs up and down, verified, within a memory budget, with progress
    existence.py  which blobs the remote lacks, in few requests
    calls.py      one request: its deadline, and what its outcome means for the breaker
    health.py     the circuit breaker, refused uploads, corrupt objects, shared by a build's processes
    buffers.py    bounded destinations of downloads (memory, or a file hashed as it is written)
    loops.py      the event loop and daemon threads of backends without one of their own
    limits.py     sizes, rates and batch limits
    backends/     one backend a file (file, gcs, s3, any fsspec) behind the Backend protocol

fsspec, gcsfs and s3fs are imported only when a store for their scheme is set up: importing this
package costs nothing on the no-op build path (file:// needs none of them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# What callers import from here, and the module that defines it. Loaded on first use (PEP 562), so
# that importing one module of the package (config.py, for the lease objects' URL parsing) does
# not load the store, asyncio and the rest.
_EXPORTS = {
    "ProcessHealth": "health",
    "Progress": "transfers",
    "RemoteBlobsUnavailableError": "outcomes",
    "RemoteConfig": "config",
    "RemoteCache": "store",
    "SharedHealth": "health",
    "TransferStats": "stats",
    "parse_record": "records",
}

if TYPE_CHECKING:
    from mbuild.stores.remote.config import RemoteConfig
    from mbuild.stores.remote.health import ProcessHealth, SharedHealth
    from mbuild.stores.remote.outcomes import RemoteBlobsUnavailableError
    from mbuild.stores.remote.records import parse_record
    from mbuild.stores.remote.stats import TransferStats
    from mbuild.stores.remote.store import RemoteCache
    from mbuild.stores.remote.transfers import Progress


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [  # the keys of _EXPORTS, spelled out for static tools
    "ProcessHealth", "Progress", "RemoteBlobsUnavailableError", "RemoteCache", "RemoteConfig", "SharedHealth",
    "TransferStats", "parse_record",
]
