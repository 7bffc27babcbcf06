"""file://: the remote cache in a directory, maybe on a shared file system.

Plain os calls on daemon threads (a call stuck on a hung mount is abandoned at its deadline and
never delays exit). Reads open without blocking (a FIFO does not wait for a writer) and read only
regular files (a FIFO, a device such as /dev/zero, a directory are corrupt). A record is created
by hard-linking a finished temporary file: atomic, and refused if the name is taken."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import uuid

from mbuild.stores.remote import limits
from mbuild.stores.remote.buffers import read_size
from mbuild.stores.remote.loops import background_loop
from mbuild.stores.remote.outcomes import Corrupt
from mbuild.stores.remote.stats import TransferStats


class FileBackend:
    """A directory; every call is one file-system operation on a daemon thread."""

    can_list = False  # a stat is cheaper than any listing

    def __init__(self, path: str, stats: TransferStats):
        self.root = os.path.abspath(os.path.expanduser(path))
        self.stats = stats
        io = background_loop()
        self.loop, self.threads = io.loop, io.threads

    async def _io(self, fn, *args):
        self.stats.requests += 1
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
            raise Corrupt(f"{path} is not a regular file ({exc.strerror})") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                    stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "not a regular file")
            raise Corrupt(f"{path} is {kind}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_out(path: str, sink) -> None:
    """The file's bytes to `sink`, until it has size + 1 of them (it returns False) or the file ends."""
    buf = memoryview(bytearray(read_size(sink)))
    with open(_open_regular(path), "rb", buffering=0) as src:
        while n := src.readinto(buf):
            if not sink.write_sync(buf[:n]):
                return


def _tmp_beside(path: str) -> str:
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return os.path.join(parent, f".tmp-{uuid.uuid4().hex}")


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


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
        buf = memoryview(bytearray(limits.CHUNK))
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
