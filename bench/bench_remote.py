"""Remote cache benchmark: a warm GCS cache (fake-gcs-server on 127.0.0.1) serving a fresh clone.

1. A 1,000-action graph: clone A builds and uploads; clone B (another path, empty local cache)
   builds the top target. Reports B's wall time, requests, bytes moved, and what B ran (nothing),
   against raw gcsfs reading the same objects (every record B read, and the top target's blobs)
   one by one and batched.
2. A 1 GB output: clone A builds an action writing 1 GB and uploads it; clone B builds it (a remote
   hit whose output is requested, so the 1 GB is downloaded and verified). Against raw gcsfs
   `get_file` of the same object.

    python bench/bench_remote.py              # both parts
    python bench/bench_remote.py --skip-1gb
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import synth  # noqa: E402
from servers import free_port, gcs_binary  # noqa: E402

BIG_RULE = '''
from mbuild import attr, rule

@rule(attrs={"size": attr.int()}, outputs=["big.bin"])
def big(ctx):
    chunk = bytes(range(256)) * 4096          # 1 MiB of a repeating pattern
    with open(ctx.out / "big.bin", "wb") as f:
        for _ in range(ctx.attr.size >> 20):
            f.write(chunk)
'''


def start_emulator(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "filesystem",
         "-filesystem-root", str(root), "-external-url", endpoint, "-log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import urllib.request

    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1).close()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # waiting for the emulator we just started


def workspace_toml(url: str, endpoint: str) -> str:
    return f'[remote]\nurl = "{url}"\n[remote.options]\nendpoint_url = "{endpoint}"\ntoken = "anon"\n'


def build(root: Path, target: str) -> tuple[float, dict, list[dict]]:
    events = root / "events.jsonl"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mbuild.front.cli", "build", "-q", "--events", str(events), target], cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    records = [json.loads(line) for line in events.read_text().splitlines()]
    return wall, records[-1]["summary"], records[:-1]


def raw_gcsfs(endpoint: str, paths: list[str]) -> tuple[float, float, int]:
    """(one-by-one seconds, batched seconds, bytes) for reading these objects with gcsfs."""
    import gcsfs

    fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    start = time.perf_counter()
    total = sum(len(fs.cat_file(p)) for p in paths)
    one_by_one = time.perf_counter() - start
    fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    start = time.perf_counter()
    fs.cat(paths)
    batched = time.perf_counter() - start
    return one_by_one, batched, total


def part_graph(tmp: Path, endpoint: str, n: int) -> None:
    import gcsfs

    fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    fs.mkdir("bench-graph")
    url = "gs://bench-graph/cache"
    a = tmp / "graph" / "clone-a"
    synth.generate(a, "random", n)
    (a / "WORKSPACE.toml").write_text(workspace_toml(url, endpoint))
    b = tmp / "graph" / "elsewhere" / "clone-b"
    shutil.copytree(a, b)
    wall_a, sum_a, _ = build(a, "//:top")
    wall_b, sum_b, events_b = build(b, "//:top")
    keys = [e["key"] for e in events_b]
    record_paths = [f"bench-graph/cache/ac/{k}" for k in keys]
    top = next(e for e in events_b if e["label"] == "//:top")
    top_record = json.loads(fs.cat_file(f"bench-graph/cache/ac/{top['key']}")[33:])
    blob_paths = [f"bench-graph/cache/cas/{d[:2]}/{d}" for _, d, _, _ in top_record["files"]]
    one, batched, raw_bytes = raw_gcsfs(endpoint, record_paths + blob_paths)
    print(f"1) {n + 1}-action graph, warm remote cache, fresh clone")
    print(f"   clone A (cold, uploads):   {wall_a:7.2f} s   ran {sum_a['ran']}, uploaded {sum_a['bytes_up'] / 1e6:.1f} MB")
    print(f"   clone B (fresh):           {wall_b:7.2f} s   ran {sum_b['ran']}, remote hits {sum_b['remote_hits']}, "
          f"requests {sum_b.get('remote_requests', '?')}, bytes down {sum_b['bytes_down'] / 1e3:.1f} KB (outputs of //:top only)")
    print(f"   raw gcsfs, same {len(record_paths)} records + {len(blob_paths)} blob(s) ({raw_bytes / 1e3:.0f} KB): "
          f"one by one {one:.2f} s, batched fs.cat {batched:.2f} s")
    print(f"   ratio: clone B / raw one-by-one = {wall_b / one:.2f}x; / raw batched = {wall_b / batched:.2f}x "
          "(clone B includes interpreter start, loading 1,000 targets and computing keys)")


def part_big(tmp: Path, endpoint: str, size: int) -> None:
    import gcsfs

    fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    fs.mkdir("bench-big")
    url = "gs://bench-big/cache"
    a = tmp / "big" / "clone-a"
    (a / "p").mkdir(parents=True)
    (a / "bigrule.py").write_text(BIG_RULE)
    (a / "p" / "BUILD.py").write_text(f"from bigrule import big\nbig(name='big', size={size})\n")
    (a / "WORKSPACE.toml").write_text(workspace_toml(url, endpoint))
    b = tmp / "big" / "elsewhere" / "clone-b"
    shutil.copytree(a, b)
    wall_a, sum_a, _ = build(a, "//p:big")
    wall_b, sum_b, events_b = build(b, "//p:big")
    record = json.loads(fs.cat_file(f"bench-big/cache/ac/{events_b[0]['key']}")[33:])
    digest = record["files"][0][1]
    dest = tmp / "raw.bin"
    start = time.perf_counter()
    fs.get_file(f"bench-big/cache/cas/{digest[:2]}/{digest}", str(dest))
    raw = time.perf_counter() - start
    print(f"2) one {size / 2**30:.1f} GiB output")
    print(f"   clone A (runs, uploads):   {wall_a:7.2f} s   uploaded {sum_a['bytes_up'] / 1e9:.2f} GB")
    print(f"   clone B (remote hit):      {wall_b:7.2f} s   downloaded and verified {sum_b['bytes_down'] / 1e9:.2f} GB, "
          f"requests {sum_b.get('remote_requests', '?')}")
    print(f"   raw gcsfs get_file:        {raw:7.2f} s   ratio clone B / raw = {wall_b / raw:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--skip-1gb", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mbuild-bench-remote-"))
    proc, endpoint = start_emulator(tmp / "gcs-data")
    try:
        part_graph(tmp, endpoint, args.n)
        if not args.skip_1gb:
            part_big(tmp, endpoint, args.big_mb << 20)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
