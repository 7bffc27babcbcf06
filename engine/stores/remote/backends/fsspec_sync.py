"""A synchronous fsspec filesystem (memory://, ...), called from daemon threads.

Create-if-absent is only as atomic as the filesystem's pipe_file(mode="create")."""

from __future__ import annotations

import asyncio

from mbuild.stores.remote.backends.fsspec_async import progress_callback
from mbuild.stores.remote.buffers import read_size
from mbuild.stores.remote.loops import background_loop
from mbuild.stores.remote.stats import TransferStats


class SyncFSBackend:
    """`fs` at `root`; every call is one blocking fsspec call on the process's remote I/O threads."""

    can_list = False

    def __init__(self, fs, root: str, stats: TransferStats):
        self.fs = fs
        self.root = root
        self.stats = stats
        io = background_loop()
        self.loop, self.threads = io.loop, io.threads

    async def _io(self, fn, *args, **kwargs):
        self.stats.requests += 1
        return await asyncio.get_running_loop().run_in_executor(self.threads, lambda: fn(*args, **kwargs))

    async def stat(self, path):
        return (await self._io(self.fs.info, path))["size"]

    async def stream_to(self, path, sink):
        def copy():
            with self.fs.open(path, "rb") as f:
                while data := f.read(read_size(sink)):
                    if not sink.write_sync(data):
                        return

        await self._io(copy)

    async def create(self, path, data):
        await self._io(self.fs.pipe_file, path, data, mode="create")

    async def write(self, path, data):
        await self._io(self.fs.pipe_file, path, data)

    async def upload_file(self, lpath, rpath, size, report):
        await self._io(self.fs.put_file, lpath, rpath, callback=progress_callback(report, size))
