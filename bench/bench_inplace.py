"""In-place outputs against the managed (CAS) path, on the GCS emulator (fake-gcs-server on
127.0.0.1; memory backend by default, `--backend filesystem` for the one bench_remote.py uses).

The same output, N objects of S bytes (default 10,000 x 100 KiB = 1 GB), published two ways:

- managed: the action wrote it to a local directory; mbuild hashes every file into the CAS and
  uploads every blob, then the record, to the remote cache (what a build does today);
- in place: the action wrote it to gs://.../out/... itself; mbuild lists the prefix once (fsspec
  `find(detail=True)`), builds the manifest from the store's checksums and uploads the record.

The action's own writes are not timed in either path (they are the action's work). Printed: time
and bytes moved by mbuild for each, their ratio, and the cost of an in-place hit check (one
listing, compared with the manifest).

    python bench/bench_inplace.py                       # 10,000 x 100 KiB
    python bench/bench_inplace.py --objects 2000 --size 65536
    python bench/bench_inplace.py --backend filesystem   # its listings read a file per object: ~6 s per 10,000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from bench_remote import start_emulator  # noqa: E402
from servers import gcs_emulator  # noqa: E402


def payload(i: int, size: int) -> bytes:
    head = f"object {i:06d}\n".encode()
    return (head * (size // len(head) + 1))[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100 * 1024, help="bytes per object")
    parser.add_argument("--backend", choices=["memory", "filesystem"], default="memory", help="the emulator's storage")
    args = parser.parse_args()
    n, size = args.objects, args.size
    import fsspec

    from mbuild.action.outputs import collect
    from mbuild.stores.cas import LocalCAS
    from mbuild.stores.inplace.manifest import Place
    from mbuild.stores.inplace.store import InPlaceStore, PlaceConfig
    from mbuild.stores.remote import RemoteCache, RemoteConfig
    from mbuild.stores.results import ActionResult

    tmp = Path(tempfile.mkdtemp(prefix="bench-inplace-"))
    if args.backend == "filesystem":
        proc, endpoint = start_emulator(tmp / "gcs")
        stop = proc.terminate
    else:
        emulator = gcs_emulator()
        server = emulator.__enter__()
        endpoint, stop = server.endpoint, lambda: emulator.__exit__(None, None, None)
    try:
        options = {"endpoint_url": endpoint, "token": "anon"}
        fs = fsspec.filesystem("gcs", skip_instance_cache=True, **options)
        fs.mkdir("bench")
        total = n * size
        print(f"output: {n:,} objects x {size:,} B = {total / 1e9:.2f} GB (emulator: {args.backend} backend)")

        # the action's writes (not timed): a local directory for the managed path, objects in place
        out = tmp / "out"
        out.mkdir()
        url = "gs://bench/out/p/shards-0123456789abcdef"
        t = time.perf_counter()
        batch: dict[str, bytes] = {}
        for i in range(n):
            data = payload(i, size)
            (out / f"shard-{i:05d}.bin").write_bytes(data)
            batch[f"{url}/shard-{i:05d}.bin"] = data
            if len(batch) == 200 or i == n - 1:
                fs.pipe(batch)
                batch = {}
        print(f"(setup: the action's own writes, local and in place: {time.perf_counter() - t:.1f} s)")

        cas = LocalCAS(tmp / "cache")
        remote = RemoteCache(RemoteConfig("gs://bench/cache", timeout=60.0, storage_options=options))

        # managed: hash into the CAS, upload every blob, then the record
        t = time.perf_counter()
        result = collect(out, cas, None, {})
        t_hash = time.perf_counter() - t
        remote.publish(cas, "a" * 32, result)
        t_managed = time.perf_counter() - t
        up_managed, req_managed = remote.stats.bytes_up, remote.stats.requests
        print(f"managed (CAS):  {t_managed:7.2f} s  (hashing {t_hash:.2f} s, uploading {t_managed - t_hash:.2f} s); "
              f"{up_managed / 1e6:,.1f} MB up, {req_managed:,} requests")

        # in place: one listing, the manifest, the record
        places = InPlaceStore(PlaceConfig("gs://bench/out", options))
        places.list(url)  # the filesystem's set-up (session, first request) is not the listing's cost
        t = time.perf_counter()
        entries = places.list(url)
        t_list = time.perf_counter() - t
        inplace = ActionResult.make((), (), (), None, {}, Place(url, entries))
        remote.publish(cas, "b" * 32, inplace)
        t_inplace = time.perf_counter() - t
        up_inplace = remote.stats.bytes_up - up_managed
        req_inplace = remote.stats.requests - req_managed
        pages = -(-n // 1000)  # objects.list returns at most 1,000 names a page
        assert len(entries) == n
        print(f"in place:       {t_inplace:7.2f} s  (listing {t_list:.2f} s, {pages} list pages); "
              f"{up_inplace / 1e6:,.3f} MB up (the record), 0 object bytes down, {req_inplace + pages} requests")
        print(f"ratio managed / in place: {t_managed / t_inplace:,.1f}x time, {up_managed / max(up_inplace, 1):,.0f}x bytes")

        # the hit check: list again, compare with the manifest
        times = []
        for _ in range(3):
            t = time.perf_counter()
            assert places.difference(inplace.place) is None
            times.append(time.perf_counter() - t)
        print(f"hit check (list + compare): {min(times):.2f} s best of 3, {len(entries):,} entries, no bytes downloaded")
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
