"""Compare-and-swap objects, one per backend: the only way a lease (or a publish-once marker) is
written. Local files (a per-key flock and an atomic rename), GCS (ifGenerationMatch), S3
(If-Match / If-None-Match), and the local database (one LMDB write transaction)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mbuild.stores.localdb import LocalDB

class Conflict(Exception):
    """A compare-and-swap found a different version than expected (or the object already exists)."""


# --------------------------------------------------------------------------------------------
# compare-and-swap objects, one per backend


class SwapObject(Protocol):
    """A small object written only by compare-and-swap. `expected=None` means create-if-absent."""

    where: str

    def read(self) -> tuple[bytes, str] | None:
        """(bytes, version), or None when absent."""

    def write(self, data: bytes, expected: str | None) -> str:
        """Write if the current version is `expected` (None: if absent); the new version. Conflict otherwise."""


class LocalObject:
    """A file replaced atomically (temp file + rename) under an exclusive `flock` on `<path>.lock`.

    Readers need no lock (a rename is atomic). The version is a hash of the bytes; every lease body
    has a fresh `rev`, so two writes never share a version. A crash leaves the old or the new file,
    never a torn one (at worst a stray temp file); the kernel drops a dead process's flock.
    """

    def __init__(self, path: Path):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.where = str(path)

    @staticmethod
    def _version(data: bytes) -> str:
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data, self._version(data)

    def write(self, data: bytes, expected: str | None) -> str:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self.read()
            if (current[1] if current else None) != expected:
                raise Conflict(f"{self.where}: version changed")
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            return self._version(data)
        finally:
            os.close(fd)  # releases the flock


class GcsObject:
    """A GCS object, through the remote cache's GCS transport (stores/remote/backends/gcs.py) on
    gcsfs's own HTTP session (the filesystem the remote cache uses).

    read: one GET, the generation from `x-goog-generation`. write: one single-request multipart
    upload with `ifGenerationMatch=<generation>` (0 = create); HTTP 412 -> Conflict.
    """

    def __init__(self, fs, bucket: str, name: str, timeout: float | None = None):
        self.fs, self.bucket, self.name, self.timeout = fs, bucket, name, timeout
        self.where = f"gs://{bucket}/{name}"

    def read(self) -> tuple[bytes, str] | None:
        from mbuild.stores.remote.backends import blocking, gcs

        try:
            return blocking(self.fs, gcs.read_with_generation, self.fs, self.bucket, self.name, timeout=self.timeout)
        except FileNotFoundError:
            return None

    def write(self, data: bytes, expected: str | None) -> str:
        from mbuild.stores.remote.backends import blocking, gcs

        try:
            return blocking(
                self.fs, gcs.upload_if_generation, self.fs, self.bucket, self.name, data, expected or "0", "application/json",
                timeout=self.timeout,
            )
        except FileExistsError as exc:  # gcsfs maps HTTP 412 (precondition failed) to this
            raise Conflict(f"{self.where}: generation is not {expected or 'absent'}") from exc


class S3Object:
    """An S3 object, through the remote cache's S3 transport (stores/remote/backends/s3.py) on s3fs
    (the filesystem the remote cache uses).

    read: `GetObject` (bytes and ETag). write: `PutObject` with `IfMatch=<etag>`, or
    `IfNoneMatch="*"` to create. 412 PreconditionFailed, 409 ConditionalRequestConflict, and
    NoSuchKey on an If-Match write -> Conflict. The ETag is an MD5 of the bytes: the `rev` in every
    body keeps versions unique.
    """

    def __init__(self, fs, bucket: str, key: str, timeout: float | None = None):
        self.fs, self.bucket, self.key, self.timeout = fs, bucket, key, timeout
        self.where = f"s3://{bucket}/{key}"

    def read(self) -> tuple[bytes, str] | None:
        from mbuild.stores.remote.backends import blocking, s3

        try:
            return blocking(self.fs, s3.get_with_etag, self.fs, self.bucket, self.key, timeout=self.timeout)
        except FileNotFoundError:
            return None

    def write(self, data: bytes, expected: str | None) -> str:
        from mbuild.stores.remote.backends import blocking, s3

        try:
            return blocking(
                self.fs, s3.put_if, self.fs, self.bucket, self.key, data, expected, ContentType="application/json",
                timeout=self.timeout,
            )
        except OSError as exc:
            if s3.version_refused(exc, expected):
                raise Conflict(f"{self.where}: ETag is not {expected or 'absent'}") from exc
            raise


def swap_object(location: str | os.PathLike, *, storage_options: dict | None = None, fs: Any = None) -> SwapObject:
    """The compare-and-swap object at a path or URL (local, gs://, s3://): `write(data, None)` is
    create-if-absent, the final guard for publishing a marker or result exactly once."""
    from mbuild.stores.remote.config import parse_url

    loc = os.fspath(location)
    where = parse_url(loc, "location")
    if where.is_local:
        return LocalObject(Path(where.path).expanduser().absolute())
    if not where.in_bucket:
        raise ValueError(f"leases need a local path, gs:// or s3:// location, not {where.scheme}://")
    parent, _, name = where.prefix.rpartition("/")
    if not name:
        raise ValueError(f"no object name in {loc!r}")
    return _objects(where.scheme, where.bucket, parent, storage_options, fs, None)(name)


def objects_at(location: str | os.PathLike, storage_options: dict | None, fs: Any, timeout: float | None = None) -> tuple[str, Callable[[str], SwapObject]]:
    """(normalised location, key -> SwapObject) for a local path / file:// URL, gs:// or s3:// prefix."""
    from mbuild.stores.remote.config import parse_url

    where = parse_url(os.fspath(location), "location")
    if where.is_local:
        root = Path(where.path).expanduser().absolute()
        return str(root), lambda key: LocalObject(root / key)
    return where.normalised, _objects(where.scheme, where.bucket, where.prefix, storage_options, fs, timeout)


def _objects(scheme: str, bucket: str, prefix: str, storage_options: dict | None, fs: Any, timeout: float | None) -> Callable[[str], SwapObject]:
    """key -> the SwapObject `prefix/key` in `bucket`, on `fs` (default: fsspec's for the options)."""

    def name(key: str) -> str:
        return f"{prefix}/{key}" if prefix else key

    if scheme not in ("gs", "s3"):
        raise ValueError(f"leases need a local path, gs:// or s3:// location, not {scheme}://")
    client = fs or filesystem(scheme, storage_options)
    kind = GcsObject if scheme == "gs" else S3Object
    return lambda key: kind(client, bucket, name(key), timeout)


def filesystem(protocol: str, storage_options: dict | None):
    """fsspec's filesystem for `protocol` with these options (stores/remote/backends.filesystem)."""
    from mbuild.stores.remote.backends import filesystem as fsspec_filesystem

    return fsspec_filesystem(protocol, storage_options)


class LmdbObject:
    """A lease record in the local database, written only by compare-and-swap.

    One LMDB write transaction reads, compares and writes, so it is atomic across every process
    sharing the cache; a killed process leaves the old or the new record, never a torn one. (Files
    would cost a file creation per write, ~1 ms on these disks; this costs microseconds.)
    """

    def __init__(self, db: LocalDB, key: str):
        self.db, self.key = db, key
        self.where = f"{db.path}#leases/{key}"

    def read(self) -> tuple[bytes, str] | None:
        return self.db.lease_record(self.key)

    def write(self, data: bytes, expected: str | None) -> str:
        if self.db.read_only:
            raise Conflict(f"{self.where}: the local cache is read-only")
        version = self.db.swap_lease_record(self.key, data, expected)
        if version is None:
            raise Conflict(f"{self.where}: version changed")
        return version
