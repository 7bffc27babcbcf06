"""The local content-addressed store: blobs as read-only files named by their digest.

Blobs enter through a temporary file in the same directory tree and are renamed into place, so a
reader never sees a partial blob. Reading a blob for use verifies its digest; a mismatch deletes
the blob and raises `BlobUnavailableError`, which callers treat as a miss.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from mbuild.digests import digest_bytes, digest_file
from mbuild.errors import BlobUnavailableError

BLOB_MODE = 0o444


class LocalCAS:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "cas"
        self.tmp = root / "tmp"
        # Where this process writes the tree cache (stores.trees). The same directory as the trees
        # it reads, except in a sandboxed worker, where trees/ is read-only and this is an alias of
        # it that stays writable (action.sandbox).
        self.trees_writable = root / "trees"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        if not self.has(digest):
            fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="put-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                self.install(Path(tmp), digest)
            except BaseException:
                _unlink(tmp)
                raise
        return digest

    def put_file(self, src: Path, *, move: bool) -> tuple[str, int]:
        """Store `src` and return (digest, size). With move=True `src` is consumed (renamed in)."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if move:
                try:
                    os.replace(src, tmp)  # now out of reach of anything still holding the old path
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    shutil.copyfile(src, tmp)
                    os.unlink(src)
            else:
                shutil.copyfile(src, tmp)
            digest, size = digest_file(tmp)
            self.install(tmp, digest)
            return digest, size
        except BaseException:
            _unlink(tmp)
            raise

    def adopt(self, path: str, executable: bool) -> tuple[str, int]:
        """Store an action's finished output file: hash it, make it read-only, hard-link it in.

        The file stays where it is (it becomes part of a tree in the tree cache) and shares its
        bytes with the blob. Executables get their own copy, so every blob is mode 0444.
        """
        digest, size = digest_file(path)
        os.chmod(path, 0o555 if executable else BLOB_MODE)
        final = self.path(digest)
        if os.path.exists(final):
            return digest, size
        if executable:
            self.put_file(Path(path), move=False)
            return digest, size
        try:
            os.link(path, final)
        except FileNotFoundError:
            final.parent.mkdir(exist_ok=True)
            try:
                os.link(path, final)
            except FileExistsError:
                pass
        except FileExistsError:
            pass  # another process stored the same bytes first
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            self.put_file(Path(path), move=False)
        return digest, size

    def install(self, tmp: Path, digest: str) -> None:
        """Move a temporary file whose bytes hash to `digest` into place: whole, atomic, read-only."""
        final = self.path(digest)
        if final.exists():
            tmp.unlink()
            return
        os.chmod(tmp, BLOB_MODE)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)

    def verify(self, digest: str, size: int | None = None) -> Path:
        """The blob's path after checking its bytes hash to `digest`; drops and raises if not."""
        path = self.path(digest)
        try:
            actual, actual_size = digest_file(path)
        except FileNotFoundError:
            raise BlobUnavailableError(digest, "missing from the local store") from None
        if actual != digest or (size is not None and actual_size != size):
            _unlink(path)
            raise BlobUnavailableError(digest, f"corrupt in the local store (content hashes to {actual}); removed")
        return path

    def read_verified(self, digest: str) -> bytes:
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobUnavailableError(digest, "missing from the local store") from None
        if digest_bytes(data) != digest:
            _unlink(path)
            raise BlobUnavailableError(digest, "corrupt in the local store; removed")
        return data

    def link_to(self, digest: str, size: int, dest: Path, executable: bool = False) -> None:
        """Place a verified copy of a blob at `dest`: a hard link, or a copy for executables or across devices."""
        src = self.verify(digest, size)
        if not executable:
            try:
                os.link(src, dest)
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o555 if executable else BLOB_MODE)


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
