"""RemoteCache: the remote cache's policy, over one backend.

The remote is an accelerator, never a dependency, and it is not trusted blindly. `lookup` counts a
result as a hit only once every blob it names is confirmed present; `publish` uploads every blob a
result names before the result itself; `fetch_blobs` installs only verified bytes. Keys and
digests are checked to be 32 lowercase hex digits before a path is built from them. `upload=False`
makes a read-only client: it sends no write of any kind (no bucket creation, no lock, no
access-time object). No network error reaches the caller: a failed request counts against the
circuit breaker (health.py) and the call returns a miss or a no-op.

Setting up the client (credentials, sessions) gets the request `timeout` (at least CONNECT_MIN).
The caller never waits on a blocked event loop longer than that either, and transfers left behind
run on daemon threads: nothing stuck keeps the process from exiting. A client that may upload
replaces a blob it found corrupt with the verified bytes of a rebuild (the same digest, so the
same bytes), and a record that is corrupt or names such a blob with its own verified result: one
bad object costs one rerun, not one per client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mbuild.digests import is_digest
from mbuild.stores.cas import LocalCAS
from mbuild.stores.remote import limits, records, transfers
from mbuild.stores.remote.backends import import_for, make_backend
from mbuild.stores.remote.calls import Link
from mbuild.stores.remote.config import RemoteConfig, check_url
from mbuild.stores.remote.existence import missing
from mbuild.stores.remote.health import Breaker, ProcessHealth, SharedHealth
from mbuild.stores.remote.loops import answers, running_loop
from mbuild.stores.remote.outcomes import RemoteBlobsUnavailableError, describe
from mbuild.stores.remote.stats import TransferStats
from mbuild.stores.remote.transfers import Budget, Progress
from mbuild.stores.results import ActionResult


class RemoteCache:
    """The remote action cache and CAS. Thread-safe; every method returns without raising on network failure."""

    def __init__(
        self, config: RemoteConfig, on_warning: Callable[[str], None] | None = None, on_progress: Progress | None = None,
        health: SharedHealth | None = None,
    ):
        if config.timeout <= 0 or config.max_failures < 1 or config.concurrency < 1:
            raise ValueError(f"bad remote cache settings: {config}")
        check_url(config.url)
        self.config = config
        self.stats = TransferStats()
        warn = on_warning or (lambda msg: warnings.warn(msg, RuntimeWarning, stacklevel=3))
        self._breaker = Breaker(config, health if health is not None else ProcessHealth(), self.stats, warn)
        self._on_progress = on_progress
        self._setup_lock = threading.Lock()
        self._pid = os.getpid()
        self._link: Link | None = None  # set up on first use (_ready)

    # --- public API -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False once the circuit breaker has opened (here or in another process of the build):
        every call is then a miss or a no-op."""
        return not self._breaker.is_open()

    @property
    def may_upload(self) -> bool:
        """True while this client uploads: configured to, and no write was refused."""
        return not self._breaker.uploads_off()

    @property
    def url(self) -> str:
        return self.config.url

    def mark_unreachable(self, reason: str) -> None:
        """Stop using the remote for the rest of the build, in every process of it; say so once."""
        self._breaker.mark_unreachable(reason)

    def report(self, what: str, exc: BaseException | None = None, write: bool = False) -> None:
        """The outcome of a request made outside this store on the same remote (a lease operation):
        a failure counts against the breaker (a refused write stops uploads), a success resets it."""
        self._breaker.report(what, exc, write)

    def filesystem(self) -> Any:
        """The fsspec filesystem this client talks through (gs://, s3://), for lease objects on the
        same remote; None for file:// or when the remote is unavailable."""
        link = self._ready()
        return getattr(link.backend, "fs", None) if link is not None and not self._breaker.is_open() else None

    def forget(self, key: str, reason: str) -> None:
        """The record of `key` is known not to hold (an in-place output changed under it): remember
        it for the build, so a rebuilt result replaces it instead of leaving it in place."""
        self._breaker.health.mark_bad("ac", key, reason)

    def get_results(self, keys: Sequence[str]) -> dict[str, ActionResult]:
        """The valid results among `keys`; absent, corrupt (reported) or unreachable ones are left out."""
        keys = _checked(keys, "action key")
        if not keys or self._breaker.is_open():
            return {}
        return self._run(lambda link: records.get_results(link, keys), {})

    def lookup(self, keys: Sequence[str]) -> dict[str, ActionResult]:
        """Remote hits: the valid results among `keys` whose every blob is confirmed present remotely.

        Two batched rounds in all: the records, then one existence check for all their blobs.
        """
        keys = _checked(keys, "action key")
        if not keys or self._breaker.is_open():
            return {}

        async def go(link: Link):
            results = await records.get_results(link, keys)
            absent = await missing(link, {f.digest for r in results.values() for f in r.files})
            return {k: r for k, r in results.items() if not any(f.digest in absent for f in r.files)}

        return self._run(go, {})

    def put_result(self, key: str, result: ActionResult) -> bool:
        """Create the result for `key` if absent. True if this call created it.

        False if it existed (never overwritten, unless it is known corrupt or names a blob known
        corrupt: then it is replaced), the client is read-only, or the remote is unavailable. The
        caller must have uploaded the result's blobs first: prefer `publish`.
        """
        return self.put_results({key: result})[key]

    def put_results(self, results: Mapping[str, ActionResult]) -> dict[str, bool]:
        """put_result for many, concurrently: key -> whether this call created it."""
        keys = _checked(results, "action key")
        none = {k: False for k in keys}
        if not keys or self._breaker.uploads_off() or self._breaker.is_open():
            return none

        async def go(link: Link):
            created = await asyncio.gather(*(records.put_result(link, k, results[k]) for k in keys))
            return dict(zip(keys, created))

        return self._run(go, none)

    def publish(self, cas: LocalCAS, key: str, result: ActionResult, progress: Progress | None = None) -> bool:
        """Upload the blobs `result` names (those not there yet), then create its result if absent.

        The result is written only once every blob it names is confirmed uploaded or present.
        True if this call created the result.
        """
        return self.publish_many(cas, {key: result}, progress)[key]

    def publish_many(self, cas: LocalCAS, results: Mapping[str, ActionResult], progress: Progress | None = None) -> dict[str, bool]:
        """publish for many results in one batch: one existence check for all their blobs, the
        missing blobs uploaded concurrently (and those known corrupt remotely replaced), then the
        results whose blobs are all confirmed, each created if absent. Returns key -> whether this
        call created it."""
        keys = _checked(results, "action key")
        none = {k: False for k in keys}
        if not keys or self._breaker.uploads_off() or self._breaker.is_open():
            return none

        async def go(link: Link):
            digests = {f.digest for k in keys for f in results[k].files}
            _, failed = await transfers.upload_blobs(link, cas, digests, self._progress(progress))

            async def one(key: str) -> bool:
                if any(f.digest in failed for f in results[key].files):
                    return False
                return await records.put_result(link, key, results[key])

            return dict(zip(keys, await asyncio.gather(*(one(k) for k in keys))))

        return self._run(go, none)

    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        """The digests not confirmed present remotely (absent, or unknown because the remote failed)."""
        digests = _checked(digests, "digest")
        if not digests or self._breaker.is_open():
            return set(digests)
        return self._run(lambda link: missing(link, set(digests)), set(digests))

    def upload_blobs(self, cas: LocalCAS, digests: Iterable[str], progress: Progress | None = None) -> int:
        """Upload, from the local CAS, those of `digests` not already present (or known corrupt
        remotely). Returns bytes sent.

        Large blobs are streamed from their file. A blob missing or corrupt in the local store is
        reported and skipped (never uploaded). A no-op for a read-only client.
        """
        digests = _checked(digests, "digest")
        if not digests or self._breaker.uploads_off() or self._breaker.is_open():
            return 0
        sent, _ = self._run(lambda link: transfers.upload_blobs(link, cas, set(digests), self._progress(progress)), (0, set()))
        return sent

    def fetch_blobs(self, cas: LocalCAS, blobs: Iterable[tuple[str, int]], progress: Progress | None = None) -> int:
        """Download blobs (digest, size) into the local CAS, each verified before it is installed.

        Blobs already in the local CAS are skipped. Returns bytes received. Raises
        RemoteBlobsUnavailableError (a BlobUnavailableError, i.e. a miss) naming every blob that
        is missing remotely, corrupt (reported, never installed), or could not be fetched; the
        others are installed all the same.
        """
        wanted: dict[str, int] = {}
        for digest, size in blobs:
            (digest,) = _checked([digest], "digest")
            if type(size) is not int or size < 0:
                raise ValueError(f"bad blob size {size!r} for {digest}")
            wanted[digest] = size
        todo = {d: s for d, s in wanted.items() if not cas.has(d)}
        if not todo:
            return 0
        unavailable = (0, {d: "remote cache unavailable" for d in todo})
        if self._breaker.is_open():
            received, problems = unavailable
        else:
            received, problems = self._run(lambda link: transfers.fetch_blobs(link, cas, todo, self._progress(progress)), unavailable)
        if problems:
            raise RemoteBlobsUnavailableError(problems)
        return received

    # --- the connection, and running coroutines on its loop -------------------------------------------

    def _progress(self, progress: Progress | None) -> Progress | None:
        return transfers.guarded(progress or self._on_progress, self._breaker.warn)

    def _connect(self) -> Link | None:
        """The backend, and the asyncio objects that belong to its event loop (again after a fork).

        A client may look for credentials or resolve names while it is made (gcsfs without a token
        asks the metadata server): that runs on a daemon thread for at most `timeout` seconds (at
        least CONNECT_MIN); past that, or if it fails, the remote counts as unreachable. Imports are
        done first, here: they take local time, not network time.
        """
        import_for(self.config.url)
        made: dict[str, Any] = {}

        def make() -> None:
            try:
                made["backend"] = make_backend(self.config, self.stats)
            except Exception as exc:
                made["error"] = exc

        limit = max(self.config.timeout, limits.CONNECT_MIN)
        thread = threading.Thread(target=make, name="mbuild-remote-connect", daemon=True)
        thread.start()
        thread.join(limit)
        if "backend" not in made:
            why = f"failed ({describe(made['error'])})" if "error" in made else f"took more than {limit:g}s"
            self._breaker.mark_unreachable(f"setting up the client for {self.config.url} {why}")
            return None
        return Link(
            made["backend"], self.config, self._breaker, self.stats,
            asyncio.Semaphore(self.config.concurrency), Budget(limits.MEMORY_BUDGET), asyncio.Semaphore(limits.LARGE_UPLOADS),
        )

    def _ready(self) -> Link | None:
        """The connection (set up now if needed; again in a forked child), or None if unavailable."""
        if self._pid != os.getpid():  # a forked child: the parent's loop thread and sessions are not here
            self._setup_lock = threading.Lock()
            self._breaker.after_fork()
            self._link, self._pid = None, os.getpid()
        link = self._link
        if link is None and not self._breaker.is_open():
            with self._setup_lock:
                if self._link is None and not self._breaker.is_open():
                    self._link = self._connect()
                link = self._link
        return link

    def _run(self, work: Callable[[Link], Any], unavailable):
        """Run the coroutine `work(link)` on the backend's loop and wait for it. Returns
        `unavailable` if the backend cannot be set up, or if the loop stops answering for `timeout`
        seconds (something blocks it: a request deadline cannot fire then): the remote is then
        unreachable."""
        link = self._ready()
        if link is None:
            return unavailable
        loop = link.backend.loop
        if running_loop() is loop:
            raise RuntimeError("RemoteCache methods are blocking; do not call them from its event loop")
        future = asyncio.run_coroutine_threadsafe(work(link), loop)
        timeout = self.config.timeout
        try:
            while True:
                try:
                    return future.result(timeout=timeout)
                except concurrent.futures.TimeoutError:
                    if future.done():
                        raise
                    if not answers(loop, timeout):
                        future.cancel()
                        self._breaker.mark_unreachable(f"the client for {self.config.url} stopped answering (its event loop was blocked for more than {timeout:g}s)")
                        return unavailable
        except BaseException:
            future.cancel()
            raise


def _checked(items: Iterable[str], what: str) -> list[str]:
    """Deduplicated, each a 32-lowercase-hex digest; ValueError otherwise (before any path is built)."""
    if isinstance(items, str):
        raise TypeError(f"expected a collection of {what}s, got a string")
    out = list(dict.fromkeys(items))
    for item in out:
        if not is_digest(item):
            raise ValueError(f"bad {what} {item!r}: expected 32 lowercase hex digits")
    return out
