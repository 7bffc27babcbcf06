"""The remote cache's backends, one a file, behind one small protocol (Backend), and the calls the
lease objects share with them (gcs.py, s3.py: the one transport for each cloud).

  file.py          file://: a directory, maybe on a shared file system (plain os calls)
  gcs.py           gs://: gcsfs, with a streamed GET, one-page listings and generation preconditions
  s3.py            s3://: s3fs, with a streamed GET, one-page listings and ETag preconditions
  fsspec_async.py  any other async fsspec filesystem
  fsspec_sync.py   any other sync fsspec filesystem (memory://, ...)

fsspec, gcsfs and s3fs are imported only when a backend for their scheme is made: importing this
package costs nothing on the no-op build path (file:// needs none of them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from mbuild.stores.remote.config import RemoteConfig, parse_url
from mbuild.stores.remote.stats import TransferStats

if TYPE_CHECKING:
    import asyncio


class Backend(Protocol):
    """A handful of async primitives over "paths" under `root`, run on `loop`.

    "Not found" is FileNotFoundError; outcomes.Corrupt for an object that cannot be what it should
    (not a regular file); any other exception is a failure. Each request adds to `stats.requests`.
    """

    root: str
    loop: asyncio.AbstractEventLoop
    can_list: bool  # has list_page

    async def stat(self, path: str) -> int:
        """The object's size."""

    async def stream_to(self, path: str, sink) -> None:
        """The object's bytes, in order, to sink.write until it returns False, then sink.flush();
        sink.size + 1 bytes at most are asked for (buffers.py)."""

    async def list_page(self, directory: str) -> tuple[set[str], bool]:
        """One page of the names in `directory`, and whether that was all of them."""

    async def create(self, path: str, data: bytes) -> None:
        """Write `data` if nothing is at `path`, in one atomic request; FileExistsError if something is."""

    async def write(self, path: str, data: bytes) -> None: ...

    async def upload_file(self, lpath: str, rpath: str, size: int, report) -> None:
        """Stream the local file `lpath` to `rpath`, calling report(bytes sent) along the way."""


def import_for(url: str) -> None:
    """Import what the backend for `url` needs (local work: done before the timed client set-up)."""
    scheme = parse_url(url).scheme
    if scheme == "gs":
        from mbuild.stores.remote.backends import gcs

        gcs.load()
    elif scheme == "s3":
        import s3fs  # noqa: F401
    elif scheme != "file":
        import fsspec  # noqa: F401


def make_backend(config: RemoteConfig, stats: TransferStats) -> Backend:
    """The backend for `config.url`, counting its requests into `stats`."""
    location = parse_url(config.url.rstrip("/"))
    if location.scheme == "file":
        from mbuild.stores.remote.backends.file import FileBackend

        return FileBackend(location.path, stats)
    if location.scheme == "gs":
        from mbuild.stores.remote.backends.gcs import GCSBackend

        return GCSBackend(location.root, config, stats)
    if location.scheme == "s3":
        from mbuild.stores.remote.backends.s3 import S3Backend

        return S3Backend(location.root, config, stats)
    import fsspec

    fs, root = fsspec.core.url_to_fs(location.url, **config.storage_options)
    if getattr(fs, "async_impl", False):
        from mbuild.stores.remote.backends.fsspec_async import AsyncFSBackend

        return AsyncFSBackend(fs, root.rstrip("/"), stats)
    from mbuild.stores.remote.backends.fsspec_sync import SyncFSBackend

    return SyncFSBackend(fs, root.rstrip("/"), stats)


def filesystem(scheme: str, storage_options: dict | None) -> Any:
    """fsspec's filesystem for `scheme` (its cached instance for these options), for callers that
    bring no client of their own (lease objects, publish-once markers)."""
    import fsspec

    return fsspec.filesystem(scheme, **(storage_options or {}))


def blocking(fs: Any, fn, *args, timeout: float | None = None, **kwargs):
    """Run the coroutine function `fn(*args, **kwargs)` on the loop of the async filesystem `fs`
    and wait for it (at most `timeout` seconds): how the lease objects call gcs.py and s3.py."""
    from fsspec.asyn import sync

    return sync(fs.loop, fn, *args, timeout=timeout, **kwargs)


__all__ = ["Backend", "blocking", "filesystem", "import_for", "make_backend"]
