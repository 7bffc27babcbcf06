"""The remote cache: action results and blobs in a bucket (gs://, s3://) or a shared directory (file://).

Layout under the configured URL (the same key and digest format as the local cache):

    <url>/ac/<action key>          the action result record, byte for byte ActionResult.to_record()
    <url>/cas/<digest[:2]>/<digest>  blobs by content digest

The remote is an accelerator, never a dependency, and it is not trusted blindly:

- Results are small control objects. Each is written in one request with a create-if-absent
  precondition (GCS `ifGenerationMatch=0`, S3 `If-None-Match: *`, file:// a hard link of a
  finished temporary file), so concurrent publishers never tear an entry: one wins, the others
  learn it existed, and a reader sees all of an entry or nothing. `publish` uploads every blob a
  result names before the result itself.
- Blobs are content-addressed: a racing duplicate upload writes the same bytes, so they need no
  precondition. Small ones (up to WHOLE_MAX) move as one request each, many at once. Large ones
  are uploaded streamed from the local file (never read whole into memory) and downloaded as one
  stream, hashed and written to a temporary file as the bytes arrive. A blob is installed into
  the local CAS only once its digest and size are verified; a mismatch is reported, never used.
- Existence checks are batched: for a big batch on a small cache, one listing page per prefix
  directory answers many digests at once; otherwise one metadata request per digest.
- Records are read with their checksum checked and the tree digest recomputed from the content
  (paths that leave the output directory, absolute paths and escaping links are refused). Nothing
  remote is ever unpickled. Keys and digests are checked to be 32 lowercase hex digits before a
  path is built from them.
- `upload=False` makes a read-only client: it sends no write of any kind (no bucket creation, no
  lock, no access-time object).
- Every request has a deadline: `timeout` seconds, plus one second per MiB moved (for a record,
  per MiB received so far: a big record may take its time, a stalled one may not). Setting up the
  client (credentials, sessions) gets the same `timeout` (at least 2 s). The caller never waits on
  a blocked event loop longer than that either, and transfers left behind run on daemon threads:
  nothing stuck keeps the process from exiting.
- Every read is bounded: a record by MAX_RECORD, a blob by the size its record states (one byte
  more tells it is too long). file:// opens without blocking (a FIFO does not wait for a writer)
  and reads only regular files (a FIFO, a device such as /dev/zero, a directory are corrupt).
- A request that fails (unreachable, timed out) counts against a circuit breaker; after
  `max_failures` consecutive failures the store stops asking, reports once through `on_warning`,
  and every later call returns at once as a miss or a no-op. "Not found" is a normal miss, never a
  failure. No network error reaches the caller. A write refused for permissions (HTTP 401/403, a
  read-only file system) is no outage: the store reports once that uploads fail and why, stops
  uploading, and goes on reading.
- `health` shares all of this between the processes of one build (the driver, its workers, its
  fray jobs): the consecutive failures, the breaker, refused uploads, and the objects found corrupt
  (see LocalDB.remote_health). A client that may upload replaces a blob it found corrupt with the
  verified bytes of a rebuild (content-addressed: the same digest, so the same bytes), and a
  record that is corrupt or names such a blob with its own verified result: one bad object costs
  one rerun, not one per client.

fsspec, gcsfs and s3fs are imported only when a store for their scheme is built: importing this
module costs nothing on the no-op build path (file:// needs none of them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import queue
import stat
import threading
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import xxhash

from mbuild.digests import digest_bytes, is_digest
from mbuild.errors import BlobUnavailableError, CacheCorruptError, RecordKeyMismatch
from mbuild.stores.results import ActionResult
from mbuild.stores.cas import LocalCAS

Progress = Callable[[str, int, int], None]  # (digest, bytes done, total bytes)

# Blobs up to this size move as one request, whole in memory; larger ones are streamed.
WHOLE_MAX = 8 << 20
# An S3 multipart upload part, the file:// copy buffer, and a ranged read on fsspec backends
# without a streaming read.
CHUNK = 8 << 20
# Bytes of whole small blobs held in memory at once (streamed transfers hold about 1 MiB each).
MEMORY_BUDGET = 64 << 20
# Large uploads at once (an S3 multipart upload holds up to UPLOAD_PARTS parts of CHUNK in memory).
LARGE_UPLOADS = 2
UPLOAD_PARTS = 3
# Progress is reported for blobs at least this large, at most once per PROGRESS_STEP bytes.
PROGRESS_MIN = 8 << 20
PROGRESS_STEP = 8 << 20
# A request moving n bytes gets timeout + n / MIN_RATE seconds before it counts as failed.
MIN_RATE = 1 << 20
# A result record larger than this is refused as corrupt, and no more than one byte past it is read.
# A record lists every output file (~100 bytes plus its path each): 100,000 files with 200-character
# paths come to about 30 MB; the returned value is under 1 MiB.
MAX_RECORD = 64 << 20
# Records larger than this are parsed on a worker thread, not on the event loop.
PARSE_INLINE_MAX = 1 << 20
# Setting up a client (credentials, sessions) gets the request timeout, but never less than this.
CONNECT_MIN = 2.0
# missing_blobs may list prefix directories (one page each) instead of asking object by object
# when a batch holds at least this many digests.
LIST_MIN_BATCH = 64
LIST_PAGE = 1000

_EMPTY_DIGEST = digest_bytes(b"")


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # gs://bucket/prefix, s3://bucket/prefix, file:///path (any fsspec URL)
    upload: bool = True  # False: a read-only client that never writes anything
    timeout: float = 10.0  # seconds per request (plus size / 1 MiB/s for bulk transfers)
    max_failures: int = 3  # consecutive failed requests that open the circuit breaker
    concurrency: int = 32  # requests in flight
    storage_options: dict = field(default_factory=dict)  # passed to the fsspec filesystem


@dataclass
class TransferStats:
    requests: int = 0  # HTTP requests sent (gs/s3: counted on the wire, retries included); file ops for file://
    bytes_up: int = 0  # blob and record bytes sent
    bytes_down: int = 0  # blob and record bytes received
    results_fetched: int = 0  # valid results read
    results_uploaded: int = 0  # results created by this client
    blobs_fetched: int = 0  # blobs verified and installed into the local CAS
    blobs_uploaded: int = 0
    errors: int = 0  # failed requests (unreachable, timed out, refused): not misses
    corrupt: int = 0  # corrupt result records and blobs seen (each reported through on_warning)


class RemoteBlobsUnavailableError(BlobUnavailableError):
    """Blobs that could not be fetched: missing, corrupt (never installed), or remote unavailable.

    `problems` maps each such digest to the reason; `digest` is the first of them. It is a
    CacheCorruptError, so callers treat it as a miss.
    """

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        first = next(iter(self.problems))
        super().__init__(first, self.problems[first])
        shown = "; ".join(f"{d} ({why})" for d, why in list(self.problems.items())[:5])
        more = f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else ""
        self.args = (f"{len(self.problems)} blob(s) unavailable from the remote cache: {shown}{more}",)


def parse_record(record: bytes, key: str) -> ActionResult:
    """A result record from elsewhere: size bounded, checksum checked, content validated, tree digest
    recomputed. Raises CacheCorruptError on anything unexpected."""
    if len(record) > MAX_RECORD:
        raise CacheCorruptError(f"action result record is larger than {MAX_RECORD} bytes")
    return ActionResult.from_record(record, key, check_tree=True)


class SharedHealth(Protocol):
    """What a store learns about its remote, shared with the other processes of the same build
    (LocalDB.remote_health is the one on the local cache's database). Reasons are one line each."""

    def down(self) -> str | None:
        """Why the build stopped using the remote, or None while it is in use."""

    def mark_down(self, reason: str) -> None: ...

    def failed(self) -> int:
        """Count one failed request; the consecutive failures now (every process's)."""

    def succeeded(self) -> None: ...

    def uploads_refused(self) -> str | None:
        """Why the remote refuses this build's writes, or None."""

    def refuse_uploads(self, reason: str) -> None: ...

    def mark_bad(self, kind: str, name: str, reason: str) -> None:
        """Remember a corrupt remote object: kind "blob" (a digest) or "ac" (an action key)."""

    def bad(self, kind: str, names: Iterable[str]) -> set[str]:
        """Those of `names` remembered as corrupt."""

    def any_bad(self) -> bool: ...

    def healed(self, kind: str, names: Iterable[str]) -> None:
        """Forget those of `names` (replaced by verified bytes)."""


class ProcessHealth:
    """SharedHealth for a store on its own: the same bookkeeping, in this process only."""

    def __init__(self):
        self._down: str | None = None
        self._refused: str | None = None
        self._failures = 0
        self._bad: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def down(self) -> str | None:
        return self._down

    def mark_down(self, reason: str) -> None:
        self._down = self._down or reason

    def failed(self) -> int:
        with self._lock:
            self._failures += 1
            return self._failures

    def succeeded(self) -> None:
        self._failures = 0

    def uploads_refused(self) -> str | None:
        return self._refused

    def refuse_uploads(self, reason: str) -> None:
        self._refused = self._refused or reason

    def mark_bad(self, kind: str, name: str, reason: str) -> None:
        with self._lock:
            self._bad.add((kind, name))

    def bad(self, kind: str, names: Iterable[str]) -> set[str]:
        with self._lock:
            return {n for n in names if (kind, n) in self._bad}

    def any_bad(self) -> bool:
        return bool(self._bad)

    def healed(self, kind: str, names: Iterable[str]) -> None:
        with self._lock:
            self._bad.difference_update((kind, n) for n in names)


# --- internal outcomes of one request ------------------------------------------------------------


class _Missing(Exception):
    """The object is not there (a normal miss)."""


class _Exists(Exception):
    """A create-if-absent found the object already there."""


class _Failed(Exception):
    """The request failed (counted against the circuit breaker), or the breaker is open."""


class _Corrupt(Exception):
    """The remote bytes are not what they should be."""


class _DeadlinePassed(TimeoutError):
    """Our own deadline for one request passed."""


class RemoteStore:
    """The remote action cache and CAS. Thread-safe; every method returns without raising on network failure."""

    def __init__(
        self, config: RemoteConfig, on_warning: Callable[[str], None] | None = None, on_progress: Progress | None = None,
        health: SharedHealth | None = None,
    ):
        if config.timeout <= 0 or config.max_failures < 1 or config.concurrency < 1:
            raise ValueError(f"bad remote cache settings: {config}")
        _check_url(config.url)
        self.config = config
        self.stats = TransferStats()
        self._warn_fn = on_warning or (lambda msg: warnings.warn(msg, RuntimeWarning, stacklevel=3))
        self._on_progress = on_progress
        self._health: SharedHealth = health if health is not None else ProcessHealth()
        self._failures = 0  # consecutive, in this process
        self._open = False  # the circuit breaker, as this process last saw it
        self._no_uploads = False  # writes were refused (this process knows)
        self._lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._pid = os.getpid()
        self._backend: Any = None  # set up on first use (_ready_backend)

    def _connect(self):
        """The backend, and the asyncio objects that belong to its event loop (again after a fork).

        A client may look for credentials or resolve names while it is made (gcsfs without a token
        asks the metadata server): that runs on a daemon thread for at most `timeout` seconds (at
        least CONNECT_MIN); past that, or if it fails, the remote counts as unreachable. Imports are
        done first, here: they take local time, not network time.
        """
        _import_backend(self.config.url)
        made: dict[str, Any] = {}

        def make() -> None:
            try:
                made["backend"] = _make_backend(self.config, self)
            except Exception as exc:
                made["error"] = exc

        limit = max(self.config.timeout, CONNECT_MIN)
        thread = threading.Thread(target=make, name="mbuild-remote-connect", daemon=True)
        thread.start()
        thread.join(limit)
        if "backend" not in made:
            why = f"failed ({_describe(made['error'])})" if "error" in made else f"took more than {limit:g}s"
            self.mark_unreachable(f"setting up the client for {self.config.url} {why}")
            return None
        self._sem = asyncio.Semaphore(self.config.concurrency)
        self._budget = _Budget(MEMORY_BUDGET)
        self._large_uploads = asyncio.Semaphore(LARGE_UPLOADS)
        return made["backend"]

    def _ready_backend(self):
        """The backend (set up now if needed; again in a forked child), or None if unavailable."""
        if self._pid != os.getpid():  # a forked child: the parent's loop thread and sessions are not here
            self._lock, self._setup_lock = threading.Lock(), threading.Lock()
            self._backend, self._pid = None, os.getpid()
        backend = self._backend
        if backend is None and not self._is_open():
            with self._setup_lock:
                if self._backend is None and not self._is_open():
                    self._backend = self._connect()
                backend = self._backend
        return backend

    # --- public API -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False once the circuit breaker has opened (here or in another process of the build):
        every call is then a miss or a no-op."""
        return not self._is_open()

    @property
    def may_upload(self) -> bool:
        """True while this client uploads: configured to, and no write was refused."""
        return not self._uploads_off()

    @property
    def url(self) -> str:
        return self.config.url

    def mark_unreachable(self, reason: str) -> None:
        """Stop using the remote for the rest of the build, in every process of it; say so once."""
        with self._lock:
            if self._open:
                return
            self._open = True
        self._health.mark_down(reason)
        self._warn(f"remote cache unreachable: {reason}; continuing without it")

    def report(self, what: str, exc: BaseException | None = None, write: bool = False) -> None:
        """The outcome of a request made outside this store on the same remote (a lease operation):
        a failure counts against the breaker (a refused write stops uploads), a success resets it."""
        if exc is None:
            self._succeeded()
        elif write and _refused(exc):
            self._refuse_uploads(what, exc)
        else:
            self._failed(what, exc)

    def filesystem(self) -> Any:
        """The fsspec filesystem this client talks through (gs://, s3://), for lease objects on the
        same remote; None for file:// or when the remote is unavailable."""
        backend = self._ready_backend()
        return getattr(backend, "fs", None) if backend is not None and not self._is_open() else None

    def get_results(self, keys: Sequence[str]) -> dict[str, ActionResult]:
        """The valid results among `keys`; absent, corrupt (reported) or unreachable ones are left out."""
        keys = _checked(keys, "action key")
        if not keys or self._is_open():
            return {}
        return self._run(self._get_results(keys), {})

    def lookup(self, keys: Sequence[str]) -> dict[str, ActionResult]:
        """Remote hits: the valid results among `keys` whose every blob is confirmed present remotely.

        Two batched rounds in all: the records, then one existence check for all their blobs.
        """
        keys = _checked(keys, "action key")
        if not keys or self._is_open():
            return {}

        async def go():
            results = await self._get_results(keys)
            missing = await self._missing({f.digest for r in results.values() for f in r.files})
            return {k: r for k, r in results.items() if not any(f.digest in missing for f in r.files)}

        return self._run(go(), {})

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
        if not keys or self._uploads_off() or self._is_open():
            return none

        async def go():
            created = await asyncio.gather(*(self._put_result(k, results[k]) for k in keys))
            return dict(zip(keys, created))

        return self._run(go(), none)

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
        if not keys or self._uploads_off() or self._is_open():
            return none

        async def go():
            _, failed = await self._upload_blobs(cas, {f.digest for k in keys for f in results[k].files}, progress)

            async def one(key: str) -> bool:
                if any(f.digest in failed for f in results[key].files):
                    return False
                return await self._put_result(key, results[key])

            return dict(zip(keys, await asyncio.gather(*(one(k) for k in keys))))

        return self._run(go(), none)

    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        """The digests not confirmed present remotely (absent, or unknown because the remote failed)."""
        digests = _checked(digests, "digest")
        if not digests or self._is_open():
            return set(digests)
        return self._run(self._missing(set(digests)), set(digests))

    def upload_blobs(self, cas: LocalCAS, digests: Iterable[str], progress: Progress | None = None) -> int:
        """Upload, from the local CAS, those of `digests` not already present (or known corrupt
        remotely). Returns bytes sent.

        Large blobs are streamed from their file. A blob missing or corrupt in the local store is
        reported and skipped (never uploaded). A no-op for a read-only client.
        """
        digests = _checked(digests, "digest")
        if not digests or self._uploads_off() or self._is_open():
            return 0
        sent, _ = self._run(self._upload_blobs(cas, set(digests), progress), (0, set()))
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
        received, problems = unavailable if self._is_open() else self._run(self._fetch_blobs(cas, todo, progress), unavailable)
        if problems:
            raise RemoteBlobsUnavailableError(problems)
        return received

    # --- paths ------------------------------------------------------------------------------------

    def _ac(self, key: str) -> str:
        return f"{self._backend.root}/ac/{key}"

    def _cas(self, digest: str) -> str:
        return f"{self._backend.root}/cas/{digest[:2]}/{digest}"

    # --- running coroutines on the backend's loop -------------------------------------------------

    def _run(self, coro, unavailable):
        """Run `coro` on the backend's loop and wait for it. Returns `unavailable` if the backend
        cannot be set up, or if the loop stops answering for `timeout` seconds (something blocks
        it: a request deadline cannot fire then): the remote is then unreachable."""
        backend = self._ready_backend()
        if backend is None:
            coro.close()
            return unavailable
        loop = backend.loop
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError("RemoteStore methods are blocking; do not call them from its event loop")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            while True:
                try:
                    return future.result(timeout=self.config.timeout)
                except concurrent.futures.TimeoutError:
                    if future.done():
                        raise
                    if not _answers(loop, self.config.timeout):
                        future.cancel()
                        self.mark_unreachable(f"the client for {self.config.url} stopped answering (its event loop was blocked for more than {self.config.timeout:g}s)")
                        return unavailable
        except BaseException:
            future.cancel()
            raise

    async def _call(
        self, what: str, factory: Callable[[], Any], *, nbytes: int = 0, progress: Callable[[], int] | None = None,
        missing_ok: bool = True, exists_ok: bool = False, write: bool = False,
    ):
        """One request with its deadline. Raises _Missing, _Exists, _Corrupt or _Failed; counts failures."""
        if self._is_open():
            raise _Failed("remote cache unavailable")
        async with self._sem:
            if self._is_open():
                raise _Failed("remote cache unavailable")
            try:
                result = await self._within_deadline(factory, nbytes, progress)
            except FileNotFoundError as exc:
                if not missing_ok:
                    self._failed(what, exc)
                    raise _Failed(str(exc)) from None
                self._succeeded()
                raise _Missing() from None
            except FileExistsError as exc:
                if not exists_ok:
                    self._failed(what, exc)
                    raise _Failed(_describe(exc)) from None
                self._succeeded()
                raise _Exists() from None
            except _Corrupt:
                self._succeeded()  # it answered
                raise
            except TimeoutError as exc:  # our deadline, or the transport's connect/read timeout
                why = str(exc) if isinstance(exc, _DeadlinePassed) else f"timed out (the transport's limit, {self.config.timeout:g}s)"
                self._failed(what, TimeoutError(why))
                raise _Failed(why) from exc
            except Exception as exc:
                if write and _refused(exc):
                    self._refuse_uploads(what, exc)
                else:
                    self._failed(what, exc)
                raise _Failed(_describe(exc)) from None
            self._succeeded()
            return result

    async def _within_deadline(self, factory: Callable[[], Any], nbytes: int, progress: Callable[[], int] | None):
        """Await factory() for timeout + nbytes / MIN_RATE seconds. With `progress` (bytes received
        so far) the limit grows with what arrived: timeout + received / MIN_RATE."""
        timeout = self.config.timeout
        limit = timeout + nbytes / MIN_RATE
        if progress is None:
            deadline = asyncio.timeout(limit)
            try:
                async with deadline:
                    return await factory()
            except TimeoutError:
                if deadline.expired():
                    raise _DeadlinePassed(f"timed out (limit {limit:g}s)") from None
                raise
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(factory())
        start = loop.time()
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, start + limit - loop.time()))
                if done:
                    return task.result()
                grown = timeout + max(nbytes, progress()) / MIN_RATE
                if grown <= limit:
                    raise _DeadlinePassed(f"timed out (limit {limit:g}s)")
                limit = grown
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    # --- the breaker, refused writes, corrupt objects: shared through `health` ------------------------

    def _is_open(self) -> bool:
        """Is the breaker open? Here, or in another process of the build (then it opens here too)."""
        if self._open:
            return True
        reason = self._health.down()
        if reason is None:
            return False
        with self._lock:
            if self._open:
                return True
            self._open = True
        self._warn(f"remote cache unreachable: {reason}; continuing without it")
        return True

    def _uploads_off(self) -> bool:
        if not self.config.upload or self._no_uploads:
            return True
        reason = self._health.uploads_refused()
        if reason is None:
            return False
        self._no_uploads = True
        self._warn(_refused_message(reason))
        return True

    def _succeeded(self) -> None:
        self._failures = 0
        self._health.succeeded()

    def _failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self.stats.errors += 1
            self._failures += 1
            if self._open:
                return
            count = self._failures
        count = max(count, self._health.failed())
        if count >= self.config.max_failures:
            self.mark_unreachable(f"{what} on {self.config.url} failed {count} times in a row (last: {_describe(exc)})")

    def _refuse_uploads(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self._no_uploads:
                return
            self._no_uploads = True
        reason = f"{what} on {self.config.url} was refused ({_describe(exc)})"
        self._health.refuse_uploads(reason)
        self._warn(_refused_message(reason))

    def _warn(self, message: str) -> None:
        try:
            self._warn_fn(message)
        except Exception:  # a reporter's bug must not break a transfer
            pass

    def _corrupt(self, kind: str, name: str, message: str) -> None:
        self.stats.corrupt += 1
        self._health.mark_bad(kind, name, message)
        self._warn(message)

    def _progress_fn(self, progress: Progress | None) -> Progress | None:
        fn = progress or self._on_progress
        if fn is None:
            return None
        state = {"ok": True}

        def safe(digest: str, done: int, total: int) -> None:
            if state["ok"]:
                try:
                    fn(digest, done, total)
                except Exception as exc:
                    state["ok"] = False
                    self._warn(f"remote cache: progress callback failed ({_describe(exc)}); no more progress reports")

        return safe

    # --- action cache -------------------------------------------------------------------------

    async def _read_record(self, key: str) -> bytes:
        """The record's bytes, at most MAX_RECORD + 1 of them. Raises like _call."""
        buf = _Buffer(MAX_RECORD)
        try:
            await self._call(f"reading ac/{key}", lambda: self._backend.stream_to(self._ac(key), buf), progress=lambda: buf.received)
        finally:
            self.stats.bytes_down += buf.received
        return bytes(buf.data)

    async def _get_results(self, keys: list[str]) -> dict[str, ActionResult]:
        async def one(key: str):
            try:
                record = await self._read_record(key)
                if len(record) > PARSE_INLINE_MAX:  # parsing a big one must not hold up the loop
                    result = await asyncio.get_running_loop().run_in_executor(None, parse_record, record, key)
                else:
                    result = parse_record(record, key)
            except (_Missing, _Failed):
                return None
            except RecordKeyMismatch as exc:
                self._corrupt("ac", key, f"remote cache: ac/{key} holds the record of another action ({exc.named}): copied or swapped by hand? ignored (a miss)")
                return None
            except (_Corrupt, CacheCorruptError) as exc:
                self._corrupt("ac", key, f"remote cache: action result {key} is corrupt ({exc}); ignored (a miss)")
                return None
            self.stats.results_fetched += 1
            return key, result

        found = await asyncio.gather(*(one(k) for k in keys))
        return dict(item for item in found if item is not None)

    async def _put_result(self, key: str, result: ActionResult) -> bool:
        record = result.to_record(key)
        try:
            await self._call(
                f"creating ac/{key}", lambda: self._backend.create(self._ac(key), record),
                nbytes=len(record), missing_ok=False, exists_ok=True, write=True,
            )
        except _Failed:
            return False
        except _Exists:
            if not await self._replaceable(key, result):
                return False
            try:
                await self._call(
                    f"replacing ac/{key}", lambda: self._backend.write(self._ac(key), record),
                    nbytes=len(record), missing_ok=False, write=True,
                )
            except _Failed:
                return False
            self._health.healed("ac", [key])
        self.stats.bytes_up += len(record)
        self.stats.results_uploaded += 1
        return True

    async def _replaceable(self, key: str, result: ActionResult) -> bool:
        """May the existing record for `key` be replaced by `result` (verified, its blobs uploaded)?
        Only if it is known corrupt, or is corrupt when read now, or names a blob known corrupt
        that `result` does not (a rebuild that made other bytes cannot repair that blob)."""
        if not self._health.any_bad():
            return False
        if self._health.bad("ac", [key]):
            return True
        try:
            existing = parse_record(await self._read_record(key), key)
        except (_Missing, _Failed):
            return False
        except (_Corrupt, CacheCorruptError):
            return True
        ours = {f.digest for f in result.files}
        stale = self._health.bad("blob", {f.digest for f in existing.files} - ours)
        if stale:
            self._health.healed("blob", stale)  # no longer named by this record; others naming it are caught when fetched
        return bool(stale)

    # --- CAS: existence -------------------------------------------------------------------------

    async def _missing(self, digests: set[str]) -> set[str]:
        if not digests:
            return set()
        backend = self._backend
        present: set[str] = set()

        async def stat(digest: str) -> None:
            try:
                await self._call(f"checking cas/{digest}", lambda: backend.stat(self._cas(digest)))
                present.add(digest)
            except (_Missing, _Failed):
                pass

        async def listing(prefix: str) -> tuple[set[str], bool] | None:
            """One page of the prefix directory: (names, whether that was all of it); None if it failed."""
            try:
                return await self._call(f"listing cas/{prefix}/", lambda: backend.list_page(f"{backend.root}/cas/{prefix}"))
            except _Missing:
                return set(), True
            except _Failed:
                return None

        groups: dict[str, list[str]] = defaultdict(list)
        for d in digests:
            groups[d[:2]].append(d)
        if not backend.can_list or len(digests) < LIST_MIN_BATCH:
            await asyncio.gather(*(stat(d) for d in digests))
            return digests - present
        # A big batch: one page of the fullest prefix directory tells whether directories fit in a
        # page (a small cache). If so, one listing answers each directory holding >= 2 queried
        # digests; otherwise (or for lone digests) ask object by object. Every request is one page.
        order = sorted(groups, key=lambda p: -len(groups[p]))
        probe = await listing(order[0])
        small_cache = probe is not None and probe[1]
        unanswered: list[str] = []
        if probe is not None:
            present.update(d for d in groups[order[0]] if d in probe[0])
            if not probe[1]:
                unanswered.extend(d for d in groups[order[0]] if d not in probe[0])
        else:
            unanswered.extend(groups[order[0]])

        async def by_listing(prefix: str) -> None:
            page = await listing(prefix)
            if page is None:
                return
            present.update(d for d in groups[prefix] if d in page[0])
            if not page[1]:  # grew past a page meanwhile: ask for the rest one by one
                await asyncio.gather(*(stat(d) for d in groups[prefix] if d not in page[0]))

        tasks = [stat(d) for d in unanswered]
        for prefix in order[1:]:
            if small_cache and len(groups[prefix]) >= 2:
                tasks.append(by_listing(prefix))
            else:
                tasks.extend(stat(d) for d in groups[prefix])
        await asyncio.gather(*tasks)
        return digests - present

    # --- CAS: upload ----------------------------------------------------------------------------

    async def _upload_blobs(self, cas: LocalCAS, digests: set[str], progress: Progress | None) -> tuple[int, set[str]]:
        """Returns (bytes sent, the digests not confirmed present remotely afterwards). Blobs known
        corrupt remotely are uploaded again (overwritten with these verified bytes)."""
        if not digests:
            return 0, set()
        missing = await self._missing(digests)
        if self._is_open():
            return 0, set(digests)
        bad = self._health.bad("blob", digests - missing)
        progress = self._progress_fn(progress)
        loop = asyncio.get_running_loop()
        sent = 0
        failed: set[str] = set()

        async def one(digest: str) -> None:
            nonlocal sent
            path = cas.path(digest)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                self._warn(f"remote cache: blob {digest} is missing from the local store; not uploaded")
                failed.add(digest)
                return
            try:
                if size <= WHOLE_MAX:
                    n = await self._budget.acquire(size)
                    try:
                        data = await loop.run_in_executor(None, _read_verified, cas, digest)
                        await self._call(f"uploading cas/{digest}", lambda: self._backend.write(self._cas(digest), data), nbytes=size, missing_ok=False, write=True)
                    finally:
                        await self._budget.release(n)
                else:
                    async with self._large_uploads:
                        await loop.run_in_executor(None, cas.verify, digest, size)  # never upload bad bytes
                        report = _throttled(progress, digest, size)
                        await self._call(
                            f"uploading cas/{digest}",
                            lambda: self._backend.upload_file(str(path), self._cas(digest), size, report),
                            nbytes=size, missing_ok=False, write=True,
                        )
                        if report:
                            report(size, final=True)
            except BlobUnavailableError as exc:
                self._warn(f"remote cache: not uploading {exc}")
                failed.add(digest)
                return
            except (_Failed, _Missing):
                failed.add(digest)
                return
            sent += size
            self.stats.bytes_up += size
            self.stats.blobs_uploaded += 1
            if digest in bad:
                self._health.healed("blob", [digest])

        await asyncio.gather(*(one(d) for d in sorted(missing | bad)))
        return sent, failed

    # --- CAS: download --------------------------------------------------------------------------

    async def _fetch_blobs(self, cas: LocalCAS, todo: dict[str, int], progress: Progress | None) -> tuple[int, dict[str, str]]:
        progress = self._progress_fn(progress)
        problems: dict[str, str] = {}
        outcome = {"received": 0}

        async def one(digest: str, size: int) -> None:
            try:
                if size == 0:
                    if digest != _EMPTY_DIGEST:
                        raise _Corrupt(f"size 0 cannot hash to {digest}")
                    tmp = _new_tmp(cas)
                    tmp.touch()
                    cas.install(tmp, digest)
                elif size <= WHOLE_MAX:
                    await self._fetch_whole(cas, digest, size)
                else:
                    await self._fetch_streamed(cas, digest, size, progress)
            except _Missing:
                problems[digest] = "missing from the remote cache"
                return
            except _Failed as exc:
                problems[digest] = f"remote cache unavailable: {exc}"
                return
            except _Corrupt as exc:
                problems[digest] = f"corrupt in the remote cache: {exc}; not used"
                self._corrupt("blob", digest, f"remote cache: blob {digest} is corrupt ({exc}); not used")
                return
            outcome["received"] += size
            self.stats.blobs_fetched += 1

        await asyncio.gather(*(one(d, s) for d, s in todo.items()))
        return outcome["received"], problems

    async def _fetch_whole(self, cas: LocalCAS, digest: str, size: int) -> None:
        n = await self._budget.acquire(size)
        try:
            buf = _Buffer(size)
            try:
                await self._call(f"reading cas/{digest}", lambda: self._backend.stream_to(self._cas(digest), buf), nbytes=size)
            finally:
                self.stats.bytes_down += buf.received
            data = buf.data
            if len(data) < size:
                raise _Corrupt(f"truncated: {len(data)} bytes, expected {size}")
            if len(data) > size:
                raise _Corrupt(f"longer than the expected {size} bytes")
            actual = digest_bytes(data)
            if actual != digest:
                raise _Corrupt(f"content hashes to {actual}")
            tmp = _new_tmp(cas)
            try:
                with open(tmp, "xb") as f:
                    f.write(data)
                cas.install(tmp, digest)
            except BaseException:
                _unlink(tmp)
                raise
        finally:
            await self._budget.release(n)

    async def _fetch_streamed(self, cas: LocalCAS, digest: str, size: int, progress: Progress | None) -> None:
        """One streamed GET, hashed and written to a temp file as it arrives; installed once verified."""
        path = self._cas(digest)
        tmp = _new_tmp(cas)
        sink = _Sink(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), size, _throttled(progress, digest, size))
        try:
            try:
                await self._call(f"reading cas/{digest}", lambda: self._backend.stream_to(path, sink), nbytes=size)
            finally:
                await sink.abandon()
                sink.close()
                self.stats.bytes_down += sink.done
            if sink.done < size:
                raise _Corrupt(f"truncated: {sink.done} bytes, expected {size}")
            if sink.done > size:
                raise _Corrupt(f"longer than the expected {size} bytes")
            actual = sink.hasher.hexdigest()
            if actual != digest:
                raise _Corrupt(f"content hashes to {actual}")
            cas.install(tmp, digest)
        finally:
            sink.close()
            _unlink(tmp)


class _Buffer:
    """Where a record or a small blob goes: memory, at most `size` + 1 bytes (one more than expected
    is enough to know the object is too long). `write` returns False once that many arrived: the
    backend stops reading."""

    def __init__(self, size: int):
        self.size = size
        self.data = bytearray()

    @property
    def received(self) -> int:
        return len(self.data)

    def write_sync(self, data) -> bool:
        room = self.size + 1 - len(self.data)
        if room > 0:
            self.data += memoryview(data)[:room]
        return len(self.data) <= self.size

    async def write(self, data) -> bool:
        return self.write_sync(data)

    async def flush(self) -> None:
        pass


class _Sink:
    """Where a streamed download goes: hashed and written to a file, up to size + 1 bytes (one more
    than expected is enough to know the object is too long). `write` returns False once that many
    arrived: the backend stops reading. Writes happen in a worker thread while the next buffer
    fills (two buffers of FLUSH bytes at most)."""

    FLUSH = 1 << 20

    def __init__(self, fd: int, size: int, report):
        self.fd = fd
        self.size = size
        self.report = report
        self.hasher = xxhash.xxh3_128()
        self.done = 0  # bytes written
        self.received = 0  # bytes handed over
        self._buf = bytearray()
        self._writing: asyncio.Future | None = None
        self._lock = threading.Lock()  # a worker may still be writing when a timed-out download closes
        self.closed = False

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self.fd)

    def write_sync(self, data) -> bool:
        """Write now (from a worker thread); False once more than `size` bytes arrived."""
        with self._lock:
            if self.closed:
                return False
            room = self.size + 1 - self.done
            if len(data) > room:
                data = memoryview(data)[:room]
            _hash_and_write(self.hasher, self.fd, data)
            self.done += len(data)
        self.received = max(self.received, self.done)
        if self.report and self.done <= self.size:
            self.report(self.done)
        return self.done <= self.size

    async def write(self, data) -> bool:
        self._buf += data
        self.received += len(data)
        if len(self._buf) >= self.FLUSH:
            await self._settle()
            data, self._buf = self._buf, bytearray()
            self._writing = asyncio.get_running_loop().run_in_executor(None, self.write_sync, data)
        return self.received <= self.size

    async def flush(self) -> None:
        await self._settle()
        if self._buf:
            data, self._buf = self._buf, bytearray()
            await asyncio.get_running_loop().run_in_executor(None, self.write_sync, data)

    async def _settle(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def abandon(self) -> None:
        """Wait for a write in progress (the file is about to be closed)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            try:
                await asyncio.shield(writing)
            except Exception:
                pass


# --- helpers ---------------------------------------------------------------------------------------


def _checked(items: Iterable[str], what: str) -> list[str]:
    """Deduplicated, each a 32-lowercase-hex digest; ValueError otherwise (before any path is built)."""
    if isinstance(items, str):
        raise TypeError(f"expected a collection of {what}s, got a string")
    out = list(dict.fromkeys(items))
    for item in out:
        if not is_digest(item):
            raise ValueError(f"bad {what} {item!r}: expected 32 lowercase hex digits")
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


def _refused(exc: BaseException) -> bool:
    """Does a failed write say this client may not write there (permissions, a read-only file system)?"""
    if isinstance(exc, PermissionError):  # file:// EACCES/EPERM, s3fs AccessDenied
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return True
    if getattr(exc, "code", None) in (401, 403):  # gcsfs HttpError
        return True
    return isinstance(exc, OSError) and str(exc).startswith("Forbidden")  # gcsfs's HTTP 403


def _refused_message(reason: str) -> str:
    return f"remote cache uploads refused: {reason}; no more uploads in this build (reads go on; --no-remote-upload does not try)"


def _answers(loop: asyncio.AbstractEventLoop, timeout: float) -> bool:
    """Does the event loop run a callback within `timeout` seconds (or is something blocking it)?"""
    ran = threading.Event()
    try:
        loop.call_soon_threadsafe(ran.set)
    except RuntimeError:  # closed
        return False
    return ran.wait(timeout)


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _new_tmp(cas: LocalCAS) -> Path:
    return cas.tmp / f"fetch-{uuid.uuid4().hex}"


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_verified(cas: LocalCAS, digest: str) -> bytes:
    return cas.read_verified(digest)


def _hash_and_write(hasher, fd: int, data: bytes) -> None:
    hasher.update(data)  # xxhash releases the GIL
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _throttled(progress: Progress | None, digest: str, total: int):
    """A progress reporter for one blob: at most once per PROGRESS_STEP, and at the end."""
    if progress is None or total < PROGRESS_MIN:
        return None
    state = {"last": -PROGRESS_STEP, "final": False}

    def report(done: int, final: bool = False) -> None:
        if state["final"]:
            return
        if done >= total or final:
            state["final"] = True
            progress(digest, total, total)
        elif done - state["last"] >= PROGRESS_STEP:
            state["last"] = done
            progress(digest, done, total)

    return report


class _Budget:
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


# --- one event loop thread for backends that are not fsspec-async ----------------------------------


class _DaemonThreads(concurrent.futures.Executor):
    """Up to `size` daemon threads for blocking file-system calls on a remote (file://, other sync
    filesystems). Unlike ThreadPoolExecutor's, they are never joined at exit: a read stuck on a
    hung mount is abandoned with the process, and the request's deadline has already given up on it."""

    def __init__(self, size: int, name: str):
        self._size, self._name = size, name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        with self._lock:
            start = self._idle == 0 and self._threads < self._size
            if start:
                self._threads += 1
                self._idle += 1
        if start:
            threading.Thread(target=self._serve, name=f"{self._name}-{self._threads}", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            future, fn, args, kwargs = self._work.get()
            with self._lock:
                self._idle -= 1
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs
            with self._lock:
                self._idle += 1


@dataclass
class _IOLoop:
    loop: asyncio.AbstractEventLoop
    threads: _DaemonThreads


_loop_lock = threading.Lock()
_own_loop: _IOLoop | None = None


def _forget_loop() -> None:  # in a forked child, the loop's thread did not come along
    global _own_loop, _loop_lock
    _own_loop, _loop_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_loop)


def _background_loop() -> _IOLoop:
    """This process's event loop thread for the non-async backends, and its daemon I/O threads."""
    global _own_loop
    with _loop_lock:
        if _own_loop is None or _own_loop.loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mbuild-remote", daemon=True).start()
            _own_loop = _IOLoop(loop, _DaemonThreads(16, "mbuild-remote-io"))
        return _own_loop


# --- backends ----------------------------------------------------------------------------------------
#
# Each is a handful of async primitives over "paths" under `root`:
#   stream_to(path, sink) (the object's bytes, in order, to sink.write until it returns False, then
#   sink.flush(); sink.size + 1 bytes at most are asked for), stat(path) -> size,
#   list_page(dir) -> (names, complete) one page of a listing (only if can_list), create(path, data) (FileExistsError if present),
#   write(path, data), upload_file(local path, path, size, report)
# "Not found" is FileNotFoundError; _Corrupt for an object that cannot be what it should (not a
# regular file); any other exception is a failure.


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _check_url(url: str) -> None:
    """ValueError for a URL no backend can use (before anything is imported or asked)."""
    scheme = _scheme(url)
    if not scheme:
        raise ValueError(f"remote cache url {url!r} needs a scheme (gs://, s3://, file://...)")
    if scheme in ("gs", "gcs", "s3", "s3a"):
        _split_url(url)


def _import_backend(url: str) -> None:
    """Import what the backend for `url` needs (local work: done before the timed client set-up)."""
    scheme = _scheme(url)
    if scheme in ("gs", "gcs"):
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # (see _GCSBackend)
        import aiohttp  # noqa: F401
        import gcsfs.core  # noqa: F401
    elif scheme in ("s3", "s3a"):
        import s3fs  # noqa: F401
    elif scheme != "file":
        import fsspec  # noqa: F401


def _make_backend(config: RemoteConfig, store: RemoteStore):
    url = config.url.rstrip("/")
    scheme = _scheme(url)
    if scheme == "file":
        return _LocalBackend(url[len("file://"):], store)
    if scheme in ("gs", "gcs"):
        return _GCSBackend(url, config, store)
    if scheme in ("s3", "s3a"):
        return _S3Backend(url, config, store)
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **config.storage_options)
    if getattr(fs, "async_impl", False):
        return _AsyncFSBackend(fs, root.rstrip("/"), store)
    return _SyncFSBackend(fs, root.rstrip("/"), store)


class _LocalBackend:
    """file://: a directory, maybe on a shared file system. Plain os calls on daemon threads (a call
    stuck on a hung mount is abandoned at its deadline and never delays exit)."""

    can_list = False  # a stat is cheaper than any listing

    def __init__(self, path: str, store: RemoteStore):
        if path.startswith("localhost/"):
            path = path[len("localhost"):]
        self.root = os.path.abspath(os.path.expanduser(path))
        self.store = store
        io = _background_loop()
        self.loop, self.threads = io.loop, io.threads

    async def _io(self, fn, *args):
        self.store.stats.requests += 1
        return await asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)

    async def stat(self, path):
        return (await self._io(os.stat, path)).st_size

    async def stream_to(self, path, sink):
        await self._io(_copy_out, path, sink)

    async def create(self, path, data):
        await self._io(_create_file, path, data)

    async def write(self, path, data):
        await self._io(_replace_file, path, data)

    async def upload_file(self, lpath, rpath, size, report):
        await self._io(_copy_file, lpath, rpath, report)


def _open_regular(path: str) -> int:
    """A descriptor for reading `path`, opened without blocking (a FIFO does not wait for a writer)
    and only if it is a regular file (after following links: a link to /dev/zero is a device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.ELOOP):  # a socket, a device without a driver, a link loop
            raise _Corrupt(f"{path} is not a regular file ({exc.strerror})") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                    stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "not a regular file")
            raise _Corrupt(f"{path} is {kind}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_out(path: str, sink: _Sink | _Buffer) -> None:
    """The file's bytes to `sink`, until it has size + 1 of them (it returns False) or the file ends."""
    buf = memoryview(bytearray(min(_Sink.FLUSH, sink.size + 1)))
    with open(_open_regular(path), "rb", buffering=0) as src:
        while n := src.readinto(buf):
            if not sink.write_sync(buf[:n]):
                return


def _tmp_beside(path: str) -> str:
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return os.path.join(parent, f".tmp-{uuid.uuid4().hex}")


def _write_new(tmp: str, data: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _create_file(path: str, data: bytes) -> None:
    """Create-if-absent, atomically: a finished temp file is hard-linked in (FileExistsError if taken)."""
    tmp = _tmp_beside(path)
    try:
        _write_new(tmp, data)
        try:
            os.link(tmp, path)
        except OSError as exc:
            if isinstance(exc, FileExistsError) or exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # No hard links here: O_EXCL claims the name (readers check the record's checksum anyway).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
    finally:
        _unlink(tmp)


def _replace_file(path: str, data: bytes) -> None:
    tmp = _tmp_beside(path)
    try:
        _write_new(tmp, data)
        os.replace(tmp, path)
    finally:
        _unlink(tmp)


def _copy_file(lpath: str, rpath: str, report) -> None:
    tmp = _tmp_beside(rpath)
    try:
        done = 0
        buf = memoryview(bytearray(CHUNK))
        with open(lpath, "rb", buffering=0) as src, open(tmp, "xb", buffering=0) as dst:
            while n := src.readinto(buf):
                view = buf[:n]
                while view:
                    view = view[dst.write(view):]
                done += n
                if report:
                    report(done)
        os.replace(tmp, rpath)
    finally:
        _unlink(tmp)


class _FsspecBackend:
    """Shared by the fsspec backends: `fs`, `root` (bucket/prefix), and the loop fs runs on."""

    def __init__(self, fs, root: str, store: RemoteStore):
        self.fs = fs
        self.root = root
        self.store = store


class _AsyncFSBackend(_FsspecBackend):
    """Any async fsspec filesystem, through its public async methods."""

    can_list = False  # no portable one-page listing: ask object by object

    def __init__(self, fs, root: str, store: RemoteStore):
        super().__init__(fs, root, store)
        self.loop = fs.loop

    async def _count(self, n: int = 1):
        self.store.stats.requests += n

    async def stat(self, path):
        await self._count()
        return (await self.fs._info(path))["size"]

    async def stream_to(self, path, sink):
        """Ranged reads of CHUNK bytes in order, up to one byte past the expected size."""
        offset, limit = 0, sink.size + 1
        while offset < limit:
            want = min(CHUNK, limit - offset)
            await self._count()
            data = await self.fs._cat_file(path, start=offset, end=offset + want)
            offset += len(data)
            if not await sink.write(data) or len(data) < want:
                break
        await sink.flush()

    async def create(self, path, data):
        await self._count()
        await self.fs._pipe_file(path, data, mode="create")

    async def write(self, path, data):
        await self._count()
        await self.fs._pipe_file(path, data)

    async def upload_file(self, lpath, rpath, size, report):
        await self._count()
        await self.fs._put_file(lpath, rpath, callback=_callback(report, size))


class _SyncFSBackend(_FsspecBackend):
    """A synchronous fsspec filesystem (memory://, ...), called from worker threads.

    Create-if-absent is only as atomic as the filesystem's pipe_file(mode="create").
    """

    can_list = False

    def __init__(self, fs, root: str, store: RemoteStore):
        super().__init__(fs, root, store)
        io = _background_loop()
        self.loop, self.threads = io.loop, io.threads

    async def _io(self, fn, *args, **kwargs):
        self.store.stats.requests += 1
        return await asyncio.get_running_loop().run_in_executor(self.threads, lambda: fn(*args, **kwargs))

    async def stat(self, path):
        return (await self._io(self.fs.info, path))["size"]

    async def stream_to(self, path, sink):
        def copy():
            with self.fs.open(path, "rb") as f:
                while data := f.read(min(_Sink.FLUSH, sink.size + 1)):
                    if not sink.write_sync(data):
                        return

        await self._io(copy)

    async def create(self, path, data):
        await self._io(self.fs.pipe_file, path, data, mode="create")

    async def write(self, path, data):
        await self._io(self.fs.pipe_file, path, data)

    async def upload_file(self, lpath, rpath, size, report):
        await self._io(self.fs.put_file, lpath, rpath, callback=_callback(report, size))


def _callback(report, size: int):
    from fsspec.callbacks import Callback

    class _Report(Callback):
        def call(self, *args, **kwargs):
            if report and self.value:
                report(self.value)

    return _Report(size=size)


def _split_url(url: str) -> str:
    """'gs://bucket/prefix' -> 'bucket/prefix' (the fsspec path)."""
    rest = url.split("://", 1)[1].strip("/")
    if not rest:
        raise ValueError(f"remote cache url {url!r} names no bucket")
    return rest


class _GCSBackend(_AsyncFSBackend):
    """gcsfs. Timeouts: aiohttp connect/read timeouts per request, plus the store's deadline (which
    also bounds gcsfs's own retries). Results: a single-request upload with ifGenerationMatch=0.
    Large blobs: one streamed single-request (uploadType=media) upload from the file."""

    def __init__(self, url: str, config: RemoteConfig, store: RemoteStore):
        # gcsfs otherwise probes every bucket's type over gRPC first (and hangs on emulators).
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        import aiohttp
        from gcsfs.core import GCSFileSystem

        opts = dict(config.storage_options)
        opts.setdefault("requests_timeout", aiohttp.ClientTimeout(total=None, sock_connect=config.timeout, sock_read=config.timeout))
        trace = aiohttp.TraceConfig()

        async def on_request_start(session, ctx, params):
            store.stats.requests += 1

        trace.on_request_start.append(on_request_start)
        session_kwargs = dict(opts.get("session_kwargs") or {})
        session_kwargs["trace_configs"] = [*session_kwargs.get("trace_configs", []), trace]
        opts["session_kwargs"] = session_kwargs
        opts["use_listings_cache"] = False  # another client may add objects at any time
        opts["skip_instance_cache"] = True  # our own instance: our timeouts and counters
        fs = GCSFileSystem(**opts)
        super().__init__(fs, _split_url(url), store)

    async def _count(self, n: int = 1):
        pass  # counted on the wire by the trace config

    can_list = True

    async def stat(self, path):
        return (await self.fs._get_object(path))["size"]  # one request (_info also lists the "directory")

    async def stream_to(self, path, sink):
        # gcsfs has no streaming read that hands over the bytes as they come (get_file writes a
        # file, cat reads all), so: one GET on its session, with its URL, auth headers and timeouts.
        from gcsfs.retry import validate_response

        fs = self.fs
        session = await fs._set_session()
        async with session.get(fs.url(path), params=fs._get_params({}), headers=fs._get_headers(None), timeout=fs.requests_timeout) as r:
            if r.status >= 400:
                validate_response(r.status, await r.content.read(64 << 10), path)  # (an error's body, bounded too)
            async for data in r.content.iter_chunked(min(_Sink.FLUSH, sink.size + 1)):
                if not await sink.write(data):
                    break
            await sink.flush()

    async def list_page(self, directory):
        bucket, key, _ = self.fs.split_path(directory)
        page = await self.fs._call(
            "GET", "b/{}/o", bucket, json_out=True,
            prefix=key.rstrip("/") + "/", maxResults=LIST_PAGE, fields="items(name),nextPageToken",
        )
        names = {item["name"].rsplit("/", 1)[-1] for item in page.get("items", [])}
        return names, not page.get("nextPageToken")

    async def create(self, path, data):
        # chunksize > len(data): a single multipart request, whose precondition every GCS honours.
        await self.fs._pipe_file(path, data, mode="create", chunksize=len(data) + 1)

    async def upload_file(self, lpath, rpath, size, report):
        from gcsfs.core import quote

        fs = self.fs
        bucket, key, _ = fs.split_path(rpath)
        with _ProgressReader(lpath, report) as f:
            out = await fs._call(
                "POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
                uploadType="media", name=key, headers={"Content-Type": "application/octet-stream"},
                data=f, json_out=True,
            )
        if int(out.get("size", -1)) != size:
            raise OSError(f"upload of {rpath} stored {out.get('size')} bytes, expected {size}")


class _ProgressReader:
    """An open file for aiohttp to stream (it reads it in 64 KiB chunks), reporting progress."""

    def __init__(self, path: str, report):
        import io

        class Reader(io.BufferedReader):
            name = None  # no Content-Disposition filename

            def read(self, n=-1):
                data = super().read(n)
                if report and data:
                    self._done = getattr(self, "_done", 0) + len(data)
                    report(self._done)
                return data

            def seek(self, *args):  # a retry starts over
                self._done = 0
                return super().seek(*args)

        self.file = Reader(io.FileIO(path, "rb"))

    def __enter__(self):
        return self.file

    def __exit__(self, *exc):
        self.file.close()


class _S3Backend(_AsyncFSBackend):
    """s3fs. Timeouts: botocore connect/read timeouts and few retries, plus the store's deadline.
    Results: put_object with If-None-Match: * (412 -> existed; 409 conflict -> retried)."""

    def __init__(self, url: str, config: RemoteConfig, store: RemoteStore):
        from s3fs import S3FileSystem

        opts = dict(config.storage_options)
        config_kwargs = dict(opts.get("config_kwargs") or {})
        config_kwargs.setdefault("connect_timeout", config.timeout)
        config_kwargs.setdefault("read_timeout", config.timeout)
        config_kwargs.setdefault("retries", {"max_attempts": 2, "mode": "standard"})
        opts["config_kwargs"] = config_kwargs
        opts["use_listings_cache"] = False
        opts["skip_instance_cache"] = True
        fs = S3FileSystem(**opts)
        fs.retries = 2  # s3fs's own retry loop around botocore's (default 5, with sleeps)
        super().__init__(fs, _split_url(url), store)
        self._hooked = False

    async def _ready(self):
        if not self._hooked:
            await self.fs.set_session()
            self._hooked = True

            def count(**kwargs):
                self.store.stats.requests += 1

            self.fs.s3.meta.events.register("before-send.s3", count)

    async def _count(self, n: int = 1):
        await self._ready()

    def _split(self, path):
        bucket, key, _ = self.fs.split_path(path)
        return bucket, key

    async def stream_to(self, path, sink):
        await self._ready()
        bucket, key = self._split(path)
        body = (await self.fs._call_s3("get_object", Bucket=bucket, Key=key))["Body"]
        try:
            while data := await body.read(min(_Sink.FLUSH, sink.size + 1)):
                if not await sink.write(data):
                    break
        finally:
            body.close()
        await sink.flush()

    async def stat(self, path):
        await self._ready()
        bucket, key = self._split(path)
        return (await self.fs._call_s3("head_object", Bucket=bucket, Key=key))["ContentLength"]

    can_list = True

    async def list_page(self, directory):
        await self._ready()
        bucket, key = self._split(directory)
        out = await self.fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=LIST_PAGE)
        return {o["Key"].rsplit("/", 1)[-1] for o in out.get("Contents", [])}, not out.get("IsTruncated")

    async def create(self, path, data):
        await self._ready()
        bucket, key = self._split(path)
        for attempt in range(4):
            try:
                await self.fs._call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return
            except OSError as exc:
                code = _s3_error_code(exc)
                if code == "PreconditionFailed":
                    raise FileExistsError(path) from None
                if code != "ConditionalRequestConflict" or attempt == 3:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))  # a concurrent conditional write: ask again

    async def upload_file(self, lpath, rpath, size, report):
        await self._ready()
        chunksize = max(CHUNK, 5 << 20, -(-size // 10_000))  # S3 parts: at least 5 MiB, at most 10,000 of them
        await self.fs._put_file(lpath, rpath, callback=_callback(report, size), chunksize=chunksize, max_concurrency=UPLOAD_PARTS)


def _s3_error_code(exc: BaseException) -> str | None:
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
        exc = exc.__cause__ or exc.__context__
    return None


__all__ = [
    "RemoteBlobsUnavailableError",
    "RemoteConfig",
    "RemoteStore",
    "TransferStats",
    "parse_record",
]
