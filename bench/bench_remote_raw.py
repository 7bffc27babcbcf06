"""Remote-cache store benchmark: RemoteCache against raw gcsfs, on a local fake-gcs-server.

(a) 1,000 small blobs (1-4 KB) and 1,000 action-result records: upload, existence check, and a
    fresh clone fetching them, through RemoteCache, through raw gcsfs one object at a time, and
    through raw gcsfs' own batch calls (fs.pipe(dict), fs.cat(list), concurrent _exists).
(b) one large blob (1 GB by default): RemoteCache upload and fetch against raw gcsfs
    put_file/get_file of the same bytes; each run in its own process for a clean peak RSS.

Requests and bytes are counted on the wire (an aiohttp trace on each client's session: every HTTP
request, retries included, and the body bytes sent and received). The server uses its filesystem
backend, so the 1 GB case does not sit in its memory. On loopback a request costs the client CPU,
not latency; `--latency-ms` puts a real TCP proxy in front of the server that holds every response
that long, to see what batching buys against a network round trip. The machines are noisy
(+-1.5x): compare ratios measured in one run.

    python bench/bench_remote_raw.py                    # both parts
    python bench/bench_remote_raw.py --big-mb 0 --latency-ms 20
    python bench/bench_remote_raw.py --small 0 --big-mb 256
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import servers  # noqa: E402  (tests/servers.py: the emulator binary and readiness polling)

BUCKET = "mbuild-bench"


# --- wire counting and latency ------------------------------------------------------------------


class Wire:
    """Counts HTTP requests and body bytes on an aiohttp session (pass `options()` to gcsfs)."""

    def __init__(self):
        import aiohttp

        self.requests = self.sent = self.received = 0
        self.trace = aiohttp.TraceConfig()

        async def start(session, ctx, params):
            self.requests += 1

        async def chunk_sent(session, ctx, params):
            self.sent += len(params.chunk)

        async def chunk_received(session, ctx, params):
            self.received += len(params.chunk)

        self.trace.on_request_start.append(start)
        self.trace.on_request_chunk_sent.append(chunk_sent)
        self.trace.on_response_chunk_received.append(chunk_received)

    def options(self, endpoint: str) -> dict:
        return {"endpoint_url": endpoint, "token": "anon", "session_kwargs": {"trace_configs": [self.trace]}}

    def snap(self) -> tuple[int, int, int]:
        return self.requests, self.sent, self.received


def start_server(root: Path | None):
    """fake-gcs-server: its filesystem backend under `root`, or its memory backend."""
    port = servers.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    backend = ["-backend", "filesystem", "-filesystem-root", str(root)] if root else ["-backend", "memory"]
    proc = subprocess.Popen(
        [str(servers.gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), *backend,
         "-external-url", endpoint, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    servers._wait_http(f"{endpoint}/storage/v1/b", proc)
    from gcsfs.core import GCSFileSystem

    GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True).mkdir(BUCKET)
    return proc, endpoint


def raw_fs(options: dict):
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(**options, skip_instance_cache=True, use_listings_cache=False)


class Table:
    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, *row):
        self.rows.append(row)
        print("  " + "  ".join(str(x) for x in row), flush=True)


def measure(table: Table, group: str, name: str, wire: Wire, fn):
    before = wire.snap()
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    after = wire.snap()
    req, sent, recv = (a - b for a, b in zip(after, before))
    table.add(group, name, f"{wall:.3f}", req, sent, recv)
    return wall, req, out


# --- (a) many small objects -------------------------------------------------------------------------


def bench_small(n: int, endpoint: str, work: Path, concurrency: int) -> list[tuple]:
    from fsspec.asyn import _run_coros_in_chunks, sync

    from mbuild.stores.results import ActionResult, OutputFile
    from mbuild.stores.cas import LocalCAS
    from mbuild.stores.remote import limits
    from mbuild.stores.remote import RemoteConfig, RemoteCache

    rng = random.Random(1)
    cas = LocalCAS(work / "small-src")
    blobs, results = [], {}
    for i in range(n):
        data = rng.randbytes(rng.randint(1024, 4096))
        digest = cas.put_bytes(data)
        blobs.append((digest, len(data), data))
        results[uuid.uuid4().hex] = ActionResult.make([OutputFile(f"out/{i}.bin", digest, len(data))], value={"i": i}, meta={"label": f"//bench:t{i}"})
    records = {k: r.to_record(k) for k, r in results.items()}
    digests = [d for d, _, _ in blobs]
    print(f"\n(a) {n} blobs of 1-4 KB ({sum(s for _, s, _ in blobs)} bytes) and {n} result records "
          f"({sum(map(len, records.values()))} bytes)")
    print("  group  operation  wall_s  requests  bytes_sent  bytes_received")
    table = Table()
    timings: dict[tuple[str, str], tuple[float, int]] = {}

    # RemoteCache: a CI machine publishes, a fresh clone looks up and fetches.
    wire = Wire()
    url = f"gs://{BUCKET}/store-{uuid.uuid4().hex[:8]}"
    writer = RemoteCache(RemoteConfig(url, concurrency=concurrency, storage_options=wire.options(endpoint)))
    timings["store", "upload blobs"] = measure(table, "store", "upload blobs", wire, lambda: writer.upload_blobs(cas, digests))[:2]
    timings["store", "create records"] = measure(table, "store", "create records", wire, lambda: writer.put_results(results))[:2]
    reader = RemoteCache(RemoteConfig(url, concurrency=concurrency, storage_options=wire.options(endpoint)))
    timings["store", "read records"] = measure(table, "store", "read records", wire, lambda: reader.get_results(list(results)))[:2]
    timings["store", "exists"] = measure(table, "store", "exists", wire, lambda: reader.missing_blobs(digests))[:2]
    saved = limits.LIST_MIN_BATCH
    for name, threshold in (("exists (object GETs only)", 10**9), ("exists (listing prefix dirs)", 0)):
        limits.LIST_MIN_BATCH = threshold
        measure(table, "store", name, wire, lambda: reader.missing_blobs(digests))
    limits.LIST_MIN_BATCH = saved
    clone = LocalCAS(work / "small-clone")
    timings["store", "fetch blobs"] = measure(table, "store", "fetch blobs", wire, lambda: reader.fetch_blobs(clone, [(d, s) for d, s, _ in blobs]))[:2]
    timings["store", "lookup (records+exists)"] = measure(table, "store", "lookup (records+exists)", wire, lambda: reader.lookup(list(results)))[:2]
    assert len(reader.lookup(list(results))) == n and all(clone.has(d) for d in digests)

    # Raw gcsfs, one object at a time (what a naive client does).
    wire = Wire()
    fs = raw_fs(wire.options(endpoint))
    root = f"{BUCKET}/raw1-{uuid.uuid4().hex[:8]}"
    bpath = {d: f"{root}/cas/{d[:2]}/{d}" for d in digests}
    rpath = {k: f"{root}/ac/{k}" for k in results}

    def one_by_one_upload():
        for d, _, data in blobs:
            fs.pipe_file(bpath[d], data)

    def one_by_one_create():
        for k, rec in records.items():
            fs.pipe_file(rpath[k], rec, mode="create", chunksize=len(rec) + 1)

    timings["raw 1-by-1", "upload blobs"] = measure(table, "raw 1-by-1", "upload blobs", wire, one_by_one_upload)[:2]
    timings["raw 1-by-1", "create records"] = measure(table, "raw 1-by-1", "create records", wire, one_by_one_create)[:2]
    timings["raw 1-by-1", "read records"] = measure(table, "raw 1-by-1", "read records", wire, lambda: [fs.cat_file(p) for p in rpath.values()])[:2]
    timings["raw 1-by-1", "exists"] = measure(table, "raw 1-by-1", "exists", wire, lambda: [fs.exists(p) for p in bpath.values()])[:2]
    timings["raw 1-by-1", "fetch blobs"] = measure(table, "raw 1-by-1", "fetch blobs", wire, lambda: [fs.cat_file(p) for p in bpath.values()])[:2]

    # Raw gcsfs with its batch calls (fsspec gathers up to its batch size at once).
    wire = Wire()
    fs = raw_fs(wire.options(endpoint))
    root = f"{BUCKET}/rawb-{uuid.uuid4().hex[:8]}"
    bpath = {d: f"{root}/cas/{d[:2]}/{d}" for d in digests}
    rpath = {k: f"{root}/ac/{k}" for k in results}
    timings["raw batched", "upload blobs"] = measure(table, "raw batched", "upload blobs", wire, lambda: fs.pipe({bpath[d]: data for d, _, data in blobs}))[:2]
    timings["raw batched", "create records"] = measure(
        table, "raw batched", "create records", wire, lambda: fs.pipe({rpath[k]: rec for k, rec in records.items()}, mode="create", chunksize=10**6)
    )[:2]
    timings["raw batched", "read records"] = measure(table, "raw batched", "read records", wire, lambda: fs.cat(list(rpath.values()), on_error="return"))[:2]
    timings["raw batched", "exists"] = measure(
        table, "raw batched", "exists", wire,
        lambda: sync(fs.loop, _run_coros_in_chunks, [fs._exists(p) for p in bpath.values()], batch_size=32),
    )[:2]
    timings["raw batched", "fetch blobs"] = measure(table, "raw batched", "fetch blobs", wire, lambda: fs.cat(list(bpath.values()), on_error="return"))[:2]

    print("\n  ratios (wall time; requests): RemoteCache / raw")
    print("  operation        vs 1-by-1            vs batched")
    for op in ("upload blobs", "create records", "read records", "exists", "fetch blobs"):
        s, o, b = timings["store", op], timings["raw 1-by-1", op], timings["raw batched", op]
        print(f"  {op:15s}  {s[0] / o[0]:5.2f}x; {s[1]}/{o[1]:<6d}   {s[0] / b[0]:5.2f}x; {s[1]}/{b[1]}")
    return table.rows


# --- (b) one large blob, each direction in a fresh process -----------------------------------------

CHILD = r"""
import json, os, re, sys, time
mode, endpoint, url, src, digest, size, work, repo = json.loads(sys.argv[1])
sys.path[:0] = [repo, repo + "/bench"]
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
from bench_remote_raw import Wire, raw_fs
from pathlib import Path
from mbuild.stores.cas import LocalCAS
from mbuild.stores.remote import RemoteConfig, RemoteCache

def status(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
def reset_peak():
    open("/proc/self/clear_refs", "w").write("5")
    return status("VmRSS")
wire = Wire()
progress = []
if mode.startswith("store"):
    store = RemoteCache(RemoteConfig(url, storage_options=wire.options(endpoint)))
    store.missing_blobs(["0" * 32])  # session up, imports done
    if mode == "store-up":
        cas = LocalCAS(Path(src))
        go = lambda: store.upload_blobs(cas, [digest], progress=lambda *a: progress.append(a[1]))
    else:
        cas = LocalCAS(Path(work) / "clone")
        go = lambda: store.fetch_blobs(cas, [(digest, size)], progress=lambda *a: progress.append(a[1]))
else:
    fs = raw_fs(wire.options(endpoint))
    fs.exists(url + "/warm")
    path = src + "/cas/" + digest[:2] + "/" + digest[2:]
    if mode == "raw-up":
        go = lambda: fs.put_file(path, url + "/big")
    else:
        go = lambda: fs.get_file(url + "/big", work + "/raw-download")
r0, s0, b0 = wire.snap()
base = reset_peak()
t = time.perf_counter()
go()
wall = time.perf_counter() - t
peak = status("VmHWM") - base
r1, s1, b1 = wire.snap()
if mode.endswith("down"):  # bodies read as a stream are not seen by the trace
    got = os.path.getsize(work + "/raw-download") if mode == "raw-down" else store.stats.bytes_down
    b1 = max(b1, b0 + got)
print(json.dumps({"wall": wall, "peak": peak, "requests": r1 - r0, "sent": s1 - s0, "received": b1 - b0, "progress": len(progress)}))
"""


def bench_big(mb: int, endpoint: str, work: Path) -> None:
    from mbuild.stores.cas import LocalCAS

    size = mb << 20
    cas = LocalCAS(work / "big-src")
    src = work / "big.bin"
    print(f"\n(b) one blob of {mb} MB: generating ...", flush=True)
    with open(src, "wb") as f:
        chunk = os.urandom(16 << 20)
        for i in range(-(-size // len(chunk))):
            n = min(len(chunk), size - i * len(chunk))
            f.write(chunk[:n] if i % 2 == 0 else bytes(reversed(chunk[:n])))
    digest, size = cas.put_file(src, move=True)
    store_url = f"gs://{BUCKET}/store-big-{uuid.uuid4().hex[:8]}"
    raw_url = f"{BUCKET}/raw-big-{uuid.uuid4().hex[:8]}"
    print("  operation            wall_s   MB/s  requests  bytes_sent  bytes_received  peak_rss_delta_MB  progress_calls")
    got = {}
    for mode, url in (("store-up", store_url), ("raw-up", raw_url), ("store-down", store_url), ("raw-down", raw_url)):
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps([mode, endpoint, url, str(cas.root), digest, size, str(work), str(REPO)])],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        r = got[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {mode:18s} {r['wall']:8.2f} {size / r['wall'] / 1e6:6.0f}  {r['requests']:8d}  {r['sent']:10d}  {r['received']:14d}"
              f"  {r['peak'] / 2**20:17.1f}  {r['progress']:14d}", flush=True)
        if mode == "raw-down":
            os.unlink(work / "raw-download")
    print("\n  ratios RemoteCache / raw gcsfs (wall; peak RSS)")
    for d in ("up", "down"):
        s, r = got[f"store-{d}"], got[f"raw-{d}"]
        print(f"  {d:5s} {s['wall'] / r['wall']:5.2f}x; {s['peak'] / max(r['peak'], 1):5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000, help="small blobs and records (0: skip)")
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the large blob in MB (0: skip)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="hold every response this long (a TCP proxy)")
    parser.add_argument("--concurrency", type=int, default=32, help="RemoteConfig.concurrency")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))

    def reach(endpoint: str) -> str:
        if not args.latency_ms:
            return endpoint
        print(f"every response held {args.latency_ms:g} ms by a proxy")
        return servers.DelayProxy(int(endpoint.rsplit(":", 1)[1]), args.latency_ms / 1000).endpoint

    try:
        if args.small:  # the memory backend: its filesystem backend's writes measure the disk, +-3x run to run
            proc, endpoint = start_server(None)
            try:
                bench_small(args.small, reach(endpoint), work, args.concurrency)
            finally:
                servers._stop(proc)
        if args.big_mb:
            proc, endpoint = start_server(work / "server")
            try:
                bench_big(args.big_mb, reach(endpoint), work)
            finally:
                servers._stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
