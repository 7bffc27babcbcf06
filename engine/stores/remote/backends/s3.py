"""s3://: S3 through s3fs, for the remote cache and for lease objects.

Every conditional write goes through `put_if`: PutObject with `If-Match: <etag>`, or
`If-None-Match: *` to create. What S3 answered is read in one place, `error_of` (s3fs raises an
OSError from the botocore error that carries it): 412 PreconditionFailed (the object is not at
that version), 409 ConditionalRequestConflict (another conditional write to it was in flight).
The ETag is the content's MD5: lease bodies carry a nonce so two writes never share a version.
"""

from __future__ import annotations

import asyncio

from mbuild.stores.remote import limits
from mbuild.stores.remote.backends.fsspec_async import AsyncFSBackend, progress_callback
from mbuild.stores.remote.buffers import read_size
from mbuild.stores.remote.config import RemoteConfig
from mbuild.stores.remote.stats import TransferStats

PRECONDITION_FAILED = "PreconditionFailed"  # 412
WRITE_CONFLICT = "ConditionalRequestConflict"  # 409


def error_of(exc: BaseException | None) -> tuple[str | None, int | None]:
    """(S3 error code, HTTP status) of a failed s3fs/botocore call, or (None, None)."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return (response.get("Error") or {}).get("Code"), (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        exc = exc.__cause__ or exc.__context__
    return None, None


def version_refused(exc: BaseException, expected: str | None) -> bool:
    """Did a `put_if` fail because the object is not at `expected` (None: because it exists), or
    because another conditional write to it got there first?"""
    code, status = error_of(exc)
    return isinstance(exc, FileExistsError) or code in (PRECONDITION_FAILED, WRITE_CONFLICT) \
        or status in (409, 412) or bool(expected and code == "NoSuchKey")


async def put_if(fs, bucket: str, key: str, data: bytes, expected: str | None, **extra) -> str:
    """PutObject if the object's ETag is `expected` (None: if absent); its new ETag. Raises the
    OSError s3fs raises (classify with version_refused / error_of)."""
    condition = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
    out = await fs._call_s3("put_object", Bucket=bucket, Key=key, Body=data, **extra, **condition)
    return out["ETag"]


async def get_with_etag(fs, bucket: str, key: str) -> tuple[bytes, str]:
    """The object's bytes and ETag; FileNotFoundError when absent."""
    resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    body = resp["Body"]
    try:
        data = await body.read()
    finally:
        body.close()
    return data, resp["ETag"]


class S3Backend(AsyncFSBackend):
    """s3fs. Timeouts: botocore connect/read timeouts and few retries, plus the store's deadline.
    Results: put_if (If-None-Match: *): 412 -> existed; 409 conflict -> asked again."""

    can_list = True

    def __init__(self, root: str, config: RemoteConfig, stats: TransferStats):
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
        super().__init__(fs, root, stats)
        self._hooked = False

    async def _ready(self):
        if not self._hooked:
            await self.fs.set_session()
            self._hooked = True

            def count(**kwargs):
                self.stats.requests += 1

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
            while data := await body.read(read_size(sink)):
                if not await sink.write(data):
                    break
        finally:
            body.close()
        await sink.flush()

    async def stat(self, path):
        await self._ready()
        bucket, key = self._split(path)
        return (await self.fs._call_s3("head_object", Bucket=bucket, Key=key))["ContentLength"]

    async def list_page(self, directory):
        await self._ready()
        bucket, key = self._split(directory)
        out = await self.fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=limits.LIST_PAGE)
        return {o["Key"].rsplit("/", 1)[-1] for o in out.get("Contents", [])}, not out.get("IsTruncated")

    async def create(self, path, data):
        await self._ready()
        bucket, key = self._split(path)
        for attempt in range(4):
            try:
                await put_if(self.fs, bucket, key, data, None)
                return
            except OSError as exc:
                code, _ = error_of(exc)
                if code == PRECONDITION_FAILED:
                    raise FileExistsError(path) from None
                if code != WRITE_CONFLICT or attempt == 3:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))  # a concurrent conditional write: ask again

    async def upload_file(self, lpath, rpath, size, report):
        await self._ready()
        chunksize = max(limits.CHUNK, 5 << 20, -(-size // 10_000))  # S3 parts: at least 5 MiB, at most 10,000 of them
        await self.fs._put_file(lpath, rpath, callback=progress_callback(report, size), chunksize=chunksize, max_concurrency=limits.UPLOAD_PARTS)
