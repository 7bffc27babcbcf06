"""Any async fsspec filesystem, through its public async methods (the base of gcs.py and s3.py)."""

from __future__ import annotations

from mbuild.stores.remote import limits
from mbuild.stores.remote.stats import TransferStats


class AsyncFSBackend:
    """`fs` at `root` (bucket/prefix), on the loop fs runs on. Reads are ranged reads of CHUNK
    bytes; create-if-absent is `pipe_file(mode="create")`."""

    can_list = False  # no portable one-page listing: ask object by object

    def __init__(self, fs, root: str, stats: TransferStats):
        self.fs = fs
        self.root = root
        self.stats = stats
        self.loop = fs.loop

    async def _count(self, n: int = 1):
        self.stats.requests += n

    async def stat(self, path):
        await self._count()
        return (await self.fs._info(path))["size"]

    async def stream_to(self, path, sink):
        """Ranged reads of CHUNK bytes in order, up to one byte past the expected size."""
        offset, limit = 0, sink.size + 1
        while offset < limit:
            want = min(limits.CHUNK, limit - offset)
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
        await self.fs._put_file(lpath, rpath, callback=progress_callback(report, size))


def progress_callback(report, size: int):
    """An fsspec Callback that hands the bytes done so far to `report` (or does nothing)."""
    from fsspec.callbacks import Callback

    class _Report(Callback):
        def call(self, *args, **kwargs):
            if report and self.value:
                report(self.value)

    return _Report(size=size)
