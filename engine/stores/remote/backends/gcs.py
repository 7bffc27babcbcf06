"""gs://: Google Cloud Storage through gcsfs, for the remote cache and for lease objects.

Every conditional write goes through `upload_if_generation`: one single-request (multipart)
upload with `ifGenerationMatch` (0 = create if absent), the kind of upload whose precondition
every GCS honours (the emulator ignores it on resumable and media uploads); HTTP 412 comes back
from gcsfs as FileExistsError. Large blobs are content-addressed and need no precondition: one
streamed media upload from the file.

gcsfs otherwise probes every bucket's type over gRPC first (and hangs on emulators):
GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false is set before it is imported.
"""

from __future__ import annotations

import io
import json
import os

from mbuild.stores.remote import limits
from mbuild.stores.remote.backends.fsspec_async import AsyncFSBackend
from mbuild.stores.remote.buffers import read_size
from mbuild.stores.remote.config import RemoteConfig
from mbuild.stores.remote.stats import TransferStats


def load() -> None:
    """Import gcsfs (and aiohttp), with the bucket-type probe off."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import aiohttp  # noqa: F401
    import gcsfs.core  # noqa: F401


async def read_with_generation(fs, bucket: str, name: str) -> tuple[bytes, str]:
    """The object's bytes and generation, in one GET; FileNotFoundError when absent."""
    headers, data = await fs._call("GET", "b/{}/o/{}", bucket, name, alt="media")
    return data, str(headers["x-goog-generation"])


async def upload_if_generation(fs, bucket: str, name: str, data: bytes, generation: str, content_type: str) -> str:
    """Write the object if its generation is `generation` ("0": if absent), in one multipart
    request; its new generation. FileExistsError if the generation differs (HTTP 412). The request
    is gcsfs's own single-request upload (simple_upload) with the precondition added; the object's
    content type comes from the media part's header."""
    from gcsfs.checkers import get_consistency_checker
    from gcsfs.core import quote

    checker = get_consistency_checker(fs.consistency)
    meta = json.dumps({"name": name})
    body = (
        b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n" + meta.encode()
        + f"\n--==0==\nContent-Type: {content_type}\n\n".encode() + data + b"\n--==0==--"
    )
    out = await fs._call(
        "POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
        uploadType="multipart", ifGenerationMatch=generation, data=body, json_out=True,
        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
    )
    checker.update(data)
    checker.validate_json_response(out)
    return str(out["generation"])


class GCSBackend(AsyncFSBackend):
    """gcsfs. Timeouts: aiohttp connect/read timeouts per request, plus the store's deadline (which
    also bounds gcsfs's own retries). Requests are counted on the wire (an aiohttp trace)."""

    can_list = True

    def __init__(self, root: str, config: RemoteConfig, stats: TransferStats):
        load()
        import aiohttp
        from gcsfs.core import GCSFileSystem

        opts = dict(config.storage_options)
        opts.setdefault("requests_timeout", aiohttp.ClientTimeout(total=None, sock_connect=config.timeout, sock_read=config.timeout))
        trace = aiohttp.TraceConfig()

        async def on_request_start(session, ctx, params):
            stats.requests += 1

        trace.on_request_start.append(on_request_start)
        session_kwargs = dict(opts.get("session_kwargs") or {})
        session_kwargs["trace_configs"] = [*session_kwargs.get("trace_configs", []), trace]
        opts["session_kwargs"] = session_kwargs
        opts["use_listings_cache"] = False  # another client may add objects at any time
        opts["skip_instance_cache"] = True  # our own instance: our timeouts and counters
        super().__init__(GCSFileSystem(**opts), root, stats)

    async def _count(self, n: int = 1):
        pass  # counted on the wire by the trace config

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
            async for data in r.content.iter_chunked(read_size(sink)):
                if not await sink.write(data):
                    break
            await sink.flush()

    async def list_page(self, directory):
        bucket, key, _ = self.fs.split_path(directory)
        page = await self.fs._call(
            "GET", "b/{}/o", bucket, json_out=True,
            prefix=key.rstrip("/") + "/", maxResults=limits.LIST_PAGE, fields="items(name),nextPageToken",
        )
        names = {item["name"].rsplit("/", 1)[-1] for item in page.get("items", [])}
        return names, not page.get("nextPageToken")

    async def create(self, path, data):
        bucket, key, _ = self.fs.split_path(path)
        await upload_if_generation(self.fs, bucket, key, data, "0", "application/octet-stream")

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


class _ProgressReader(io.BufferedReader):
    """An open file for aiohttp to stream (it reads it in 64 KiB chunks), reporting progress."""

    name = None  # no Content-Disposition filename

    def __init__(self, path: str, report):
        super().__init__(io.FileIO(path, "rb"))
        self._report = report
        self._done = 0

    def read(self, n=-1):
        data = super().read(n)
        if self._report and data:
            self._done += len(data)
            self._report(self._done)
        return data

    def seek(self, *args):  # a retry starts over
        self._done = 0
        return super().seek(*args)
