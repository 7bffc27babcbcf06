"""Compare-and-swap objects, one per backend: the only way a lease (or a publish-once marker) is
written. Local files (a per-key flock and an atomic rename), GCS (ifGenerationMatch), S3
(If-Match / If-None-Match), and the local database (one LMDB write transaction)."""

from __future__ import annotations

import fcntl
import hashlib
import json
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


class CasObject(Protocol):
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
    """A GCS object through gcsfs's own HTTP session (the filesystem the remote cache uses).

    read: one `GET .../o/<name>?alt=media`, the generation from `x-goog-generation`.
    write: one single-request multipart upload with `ifGenerationMatch=<generation>` (0 = create),
    the kind of upload whose preconditions the emulator honours too; HTTP 412 -> Conflict.
    """

    def __init__(self, fs, bucket: str, name: str, timeout: float | None = None):
        self.fs, self.bucket, self.name, self.timeout = fs, bucket, name, timeout
        self.where = f"gs://{bucket}/{name}"

    def read(self) -> tuple[bytes, str] | None:
        from fsspec.asyn import sync

        try:
            headers, data = sync(self.fs.loop, self.fs._call, "GET", "b/{}/o/{}", self.bucket, self.name, alt="media", timeout=self.timeout)
        except FileNotFoundError:
            return None
        return data, str(headers["x-goog-generation"])

    def write(self, data: bytes, expected: str | None) -> str:
        from fsspec.asyn import sync

        meta = json.dumps({"name": self.name, "contentType": "application/json"})
        body = (
            b'--==0==\nContent-Type: application/json; charset=UTF-8\n\n' + meta.encode()
            + b"\n--==0==\nContent-Type: application/json\n\n" + data + b"\n--==0==--"
        )
        try:
            out = sync(
                self.fs.loop, self.fs._call, "POST", f"{self.fs._location}/upload/storage/v1/b/{self.bucket}/o",
                uploadType="multipart", ifGenerationMatch=expected or "0", data=body, json_out=True,
                headers={"Content-Type": 'multipart/related; boundary="==0=="'}, timeout=self.timeout,
            )
        except FileExistsError as exc:  # gcsfs maps HTTP 412 (precondition failed) to this
            raise Conflict(f"{self.where}: generation is not {expected or 'absent'}") from exc
        return str(out["generation"])


class S3Object:
    """An S3 object through s3fs (the filesystem the remote cache uses).

    read: `GetObject` (bytes and ETag). write: `PutObject` with `IfMatch=<etag>`, or
    `IfNoneMatch="*"` to create. 412 PreconditionFailed, 409 ConditionalRequestConflict, and
    NoSuchKey on an If-Match write -> Conflict. The ETag is an MD5 of the bytes: the `rev` in every
    body keeps versions unique.
    """

    def __init__(self, fs, bucket: str, key: str, timeout: float | None = None):
        self.fs, self.bucket, self.key, self.timeout = fs, bucket, key, timeout
        self.where = f"s3://{bucket}/{key}"

    async def _read(self):
        resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
        body = resp["Body"]
        try:
            data = await body.read()
        finally:
            body.close()
        return data, resp["ETag"]

    def read(self) -> tuple[bytes, str] | None:
        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, self._read, timeout=self.timeout)
        except FileNotFoundError:
            return None

    def write(self, data: bytes, expected: str | None) -> str:
        from fsspec.asyn import sync

        cond = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        try:
            out = sync(
                self.fs.loop, self.fs._call_s3, "put_object", Bucket=self.bucket, Key=self.key, Body=data,
                ContentType="application/json", timeout=self.timeout, **cond,
            )
        except OSError as exc:
            err = getattr(exc.__cause__, "response", {}) or {}
            code = (err.get("Error") or {}).get("Code", "")
            status = (err.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if isinstance(exc, FileExistsError) or code in ("PreconditionFailed", "ConditionalRequestConflict") \
                    or status in (409, 412) or (expected and code == "NoSuchKey"):
                raise Conflict(f"{self.where}: ETag is not {expected or 'absent'}") from exc
            raise
        return out["ETag"]



def cas_object(location: str | os.PathLike, *, storage_options: dict | None = None, fs: Any = None) -> CasObject:
    """The compare-and-swap object at a path or URL (local, gs://, s3://): `write(data, None)` is
    create-if-absent, the final guard for publishing a marker or result exactly once."""
    loc = os.fspath(location)
    proto, sep, rest = loc.partition("://")
    if not sep or proto in ("file", "local"):
        return LocalObject(Path(rest if sep else loc).expanduser().absolute())
    parent, sep, name = loc.rstrip("/").rpartition("/")
    if not name or parent.endswith(":/"):
        raise ValueError(f"no object name in {loc!r}")
    return objects_at(parent, storage_options, fs)[1](name)


def objects_at(location: str | os.PathLike, storage_options: dict | None, fs: Any, timeout: float | None = None) -> tuple[str, Callable[[str], CasObject]]:
    """(normalised location, key -> CasObject) for a local path / file:// URL, gs:// or s3:// prefix."""
    loc = os.fspath(location)
    proto, sep, rest = loc.partition("://")
    if not sep or proto in ("file", "local"):
        root = Path(rest if sep else loc).expanduser().absolute()
        return str(root), lambda key: LocalObject(root / key)
    bucket, _, prefix = rest.strip("/").partition("/")
    if not bucket:
        raise ValueError(f"location {loc!r} names no bucket")
    prefix = prefix.strip("/")

    def name(key: str) -> str:
        return f"{prefix}/{key}" if prefix else key

    if proto in ("gs", "gcs"):
        gfs = fs or filesystem("gs", storage_options)
        return f"gs://{bucket}/{prefix}".rstrip("/"), lambda key: GcsObject(gfs, bucket, name(key), timeout)
    if proto in ("s3", "s3a"):
        sfs = fs or filesystem("s3", storage_options)
        return f"s3://{bucket}/{prefix}".rstrip("/"), lambda key: S3Object(sfs, bucket, name(key), timeout)
    raise ValueError(f"leases need a local path, gs:// or s3:// location, not {proto}://")


def filesystem(protocol: str, storage_options: dict | None):
    import fsspec

    return fsspec.filesystem(protocol, **(storage_options or {}))


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
