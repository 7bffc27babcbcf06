"""Where the bytes of one download go, bounded: a record or a small blob to memory (Buffer), a
large blob hashed and written to a file as it arrives (Sink).

Each takes at most `size` + 1 bytes (one more than expected is enough to know the object is too
long); `write` returns False once that many arrived, and the backend stops reading. Backends call
`write` from the event loop or `write_sync` from a worker thread, then `flush`."""

from __future__ import annotations

import asyncio
import os
import threading

import xxhash

from mbuild.stores.remote import limits


class Buffer:
    """A record or a small blob, in memory: at most `size` + 1 bytes."""

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


class Sink:
    """A streamed download, hashed and written to the file `fd`, up to size + 1 bytes. Writes
    happen in a worker thread while the next buffer fills (two buffers of limits.FLUSH bytes at
    most); `report(bytes written)` follows them."""

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
            hash_and_write(self.hasher, self.fd, data)
            self.done += len(data)
        self.received = max(self.received, self.done)
        if self.report and self.done <= self.size:
            self.report(self.done)
        return self.done <= self.size

    async def write(self, data) -> bool:
        self._buf += data
        self.received += len(data)
        if len(self._buf) >= limits.FLUSH:
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


def read_size(sink: Buffer | Sink) -> int:
    """How many bytes a backend asks for at a time for `sink`."""
    return min(limits.FLUSH, sink.size + 1)


def hash_and_write(hasher, fd: int, data: bytes) -> None:
    hasher.update(data)  # xxhash releases the GIL
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
