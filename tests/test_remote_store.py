"""The remote cache store against real servers: fake-gcs-server (gcsfs), moto S3 (s3fs), and file://.

Every behaviour a user relies on is checked on all three backends: round trips, create-if-absent
under racing publishers, existence checks, corrupt and truncated remote objects, manifests that
try to leave the output directory, a read-only client that writes nothing, a server that dies or
answers slowly (circuit breaker), and large blobs streamed with bounded memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

import servers
from mbuild.digests import digest_bytes
from mbuild.stores.results import ActionResult, OutputFile, OutputLink, tree_digest
from mbuild.stores.cas import LocalCAS
from mbuild.stores.remote import limits
from mbuild.stores.remote import RemoteBlobsUnavailableError, RemoteConfig, RemoteCache

BACKENDS = ["gcs", "s3", "file"]
REPO = Path(__file__).resolve().parent.parent


# --- where a test's cache lives, and raw access to it for tampering -----------------------------


class Remote:
    """A fresh prefix on one backend, the options a store needs, and a raw fsspec handle on it."""

    def __init__(self, kind: str, url: str, options: dict):
        import fsspec

        self.kind = kind
        self.url = url
        self.options = options
        self.fs, self.root = fsspec.core.url_to_fs(url, **options, skip_instance_cache=True, use_listings_cache=False)

    def store(self, **config) -> tuple[RemoteCache, list[str]]:
        warnings: list[str] = []
        config.setdefault("timeout", 5.0)
        return RemoteCache(RemoteConfig(self.url, storage_options=self.options, **config), on_warning=warnings.append), warnings

    def ac(self, key: str) -> str:
        return f"{self.root}/ac/{key}"

    def blob(self, digest: str) -> str:
        return f"{self.root}/cas/{digest[:2]}/{digest}"

    def overwrite(self, path: str, data: bytes) -> None:
        if self.kind == "file":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if os.path.exists(path):
                os.chmod(path, 0o644)
            Path(path).write_bytes(data)
        else:
            self.fs.pipe_file(path, data)

    def snapshot(self, root: str | None = None) -> dict:
        """Every object under `root` (default: the whole bucket) with what would change on any write."""
        if self.kind == "file":
            base = Path(root or self.root)
            if not base.exists():
                return {}
            return {str(p): (st.st_size, st.st_mtime_ns, st.st_ino) for p in base.rglob("*") for st in [p.lstat()]}
        root = root or self.root.split("/")[0]
        found = self.fs.find(root, detail=True, withdirs=True)
        keep = ("size", "generation", "metageneration", "updated", "ETag", "LastModified")
        return {name: tuple(str(info.get(k)) for k in keep) for name, info in found.items()}


@pytest.fixture(scope="session")
def s3_options(s3_server):
    return dict(s3_server.storage_options)


@pytest.fixture(scope="session")
def buckets(gcs_server, s3_server, s3_options):
    import fsspec

    fsspec.filesystem("s3", **s3_options).mkdir("mbuild-test")
    return {"gcs": gcs_server.make_bucket("mbuild-test"), "s3": "s3://mbuild-test"}


@pytest.fixture
def remote_of(request, tmp_path):
    """kind -> a Remote at a fresh prefix of that backend (servers started on first use)."""

    def make(kind: str) -> Remote:
        prefix = f"cache-{uuid.uuid4().hex[:12]}"
        if kind == "file":
            return Remote("file", f"file://{tmp_path}/remote/{prefix}", {})
        buckets = request.getfixturevalue("buckets")
        options = request.getfixturevalue("gcs_server").storage_options if kind == "gcs" else request.getfixturevalue("s3_options")
        return Remote(kind, f"{buckets[kind]}/{prefix}", options)

    return make


@pytest.fixture(params=BACKENDS)
def remote(request, remote_of) -> Remote:
    return remote_of(request.param)


def matrix(cases: list[str], s3_cases: set[str]) -> list:
    """(backend, case) pairs: every case on gcs and file://; on S3 (moto is slow) the ones named."""
    return [pytest.param(kind, case, id=f"{kind}-{case}") for kind in BACKENDS for case in cases if kind != "s3" or case in s3_cases]


def new_cas(tmp_path: Path) -> LocalCAS:
    return LocalCAS(tmp_path / f"local-{uuid.uuid4().hex[:8]}")


def make_result(cas: LocalCAS, n: int = 5, seed: str = "", size: int = 100) -> ActionResult:
    files = []
    for i in range(n):
        data = f"{seed}-{i}-".encode() + os.urandom(size)
        files.append(OutputFile(f"out/f{i}.bin", cas.put_bytes(data), len(data), executable=(i == 0)))
    return ActionResult.make(files, links=[OutputLink("out/link", "f1.bin")], dirs=["out", "out/empty"], value={"seed": seed}, meta={"host": "h"})


def key() -> str:
    return uuid.uuid4().hex  # 32 lowercase hex digits, like an action key


def raw_record(payload: dict) -> bytes:
    data = orjson.dumps(payload)
    return digest_bytes(data).encode() + b"\n" + data


# --- round trips ---------------------------------------------------------------------------------


def test_round_trip_results_and_blobs(remote, tmp_path):
    cas = new_cas(tmp_path)
    result = make_result(cas, n=20, seed="rt")
    k = key()
    writer, warnings = remote.store()
    assert writer.publish(cas, k, result) is True
    assert writer.stats.blobs_uploaded == 20 and writer.stats.results_uploaded == 1
    assert writer.stats.bytes_up == result.total_bytes + len(result.to_record(k))

    # A fresh clone: its own store and an empty local cache.
    reader, reader_warnings = remote.store()
    absent = key()
    assert reader.get_results([k, absent]) == {k: result}
    assert reader.lookup([k, absent]) == {k: result}
    clone = new_cas(tmp_path)
    received = reader.fetch_blobs(clone, [(f.digest, f.size) for f in result.files])
    assert received == result.total_bytes
    for f in result.files:
        assert clone.read_verified(f.digest) == cas.read_verified(f.digest)
        assert os.stat(clone.path(f.digest)).st_mode & 0o777 == 0o444
    assert reader.fetch_blobs(clone, [(f.digest, f.size) for f in result.files]) == 0  # already local: no transfer
    assert reader.stats.blobs_fetched == 20 and reader.stats.results_fetched == 2
    assert reader.stats.errors == 0 and reader.stats.corrupt == 0
    assert warnings == reader_warnings == []
    assert not list(clone.tmp.iterdir())  # no temp files left behind


def test_empty_and_streamed_blobs_round_trip(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "WHOLE_MAX", 4096)  # the streamed paths, on small data
    cas = new_cas(tmp_path)
    empty, big = cas.put_bytes(b""), cas.put_bytes(os.urandom(50_000))
    result = ActionResult.make([OutputFile("empty", empty, 0), OutputFile("big", big, 50_000)])
    k = key()
    assert remote.store()[0].publish(cas, k, result)
    reader, warnings = remote.store()
    assert reader.lookup([k]) == {k: result}
    clone = new_cas(tmp_path)
    assert reader.fetch_blobs(clone, [(empty, 0), (big, 50_000)]) == 50_000
    assert clone.read_verified(empty) == b"" and clone.read_verified(big) == cas.read_verified(big)
    assert warnings == []


def test_memory_filesystem_also_works(tmp_path, monkeypatch):
    """Any fsspec URL: memory:// goes through the generic (synchronous fsspec) backend."""
    monkeypatch.setattr(limits, "WHOLE_MAX", 1000)
    cas = new_cas(tmp_path)
    result = make_result(cas, n=3, seed="mem", size=3000)
    k = key()
    url = f"memory://mbuild-{uuid.uuid4().hex[:8]}"
    store = RemoteCache(RemoteConfig(url))
    assert store.publish(cas, k, result) is True and store.put_result(k, result) is False
    clone = new_cas(tmp_path)
    assert store.lookup([k]) == {k: result}
    store.fetch_blobs(clone, [(f.digest, f.size) for f in result.files])
    assert all(clone.read_verified(f.digest) == cas.read_verified(f.digest) for f in result.files)


def test_remote_record_is_the_local_record_bytes(remote, tmp_path):
    cas = new_cas(tmp_path)
    result = make_result(cas, seed="bytes")
    k = key()
    store, _ = remote.store()
    store.publish(cas, k, result)
    assert remote.fs.cat_file(remote.ac(k)) == result.to_record(k)
    f = result.files[0]
    assert remote.fs.cat_file(remote.blob(f.digest)) == cas.read_verified(f.digest)


def test_publish_never_writes_a_result_whose_blob_it_cannot_upload(remote, tmp_path):
    cas = new_cas(tmp_path)
    result = make_result(cas, n=6, seed="order2")
    store, warnings = remote.store()
    gone = result.files[3]
    saved = cas.read_verified(gone.digest)
    os.unlink(cas.path(gone.digest))
    k = key()
    assert store.publish(cas, k, result) is False
    assert not remote.fs.exists(remote.ac(k))
    assert any(gone.digest in w for w in warnings)
    cas.put_bytes(saved)
    before = store.stats.blobs_uploaded
    assert store.publish(cas, k, result) is True
    assert store.stats.blobs_uploaded - before == 1  # only the one that was missing
    assert store.missing_blobs(f.digest for f in result.files) == set()


# --- create-if-absent ------------------------------------------------------------------------------


def test_put_result_never_overwrites(remote, tmp_path):
    cas = new_cas(tmp_path)
    first, second = make_result(cas, seed="first"), make_result(cas, seed="second")
    k = key()
    store, _ = remote.store()
    store.upload_blobs(cas, [f.digest for r in (first, second) for f in r.files])
    assert store.put_result(k, first) is True
    assert store.put_result(k, second) is False
    assert remote.fs.cat_file(remote.ac(k)) == first.to_record(k)


def test_racing_publishers_one_winner_nothing_torn(remote, tmp_path):
    cas = new_cas(tmp_path)
    contenders = [make_result(cas, n=2, seed=f"racer{i}", size=3000) for i in range(12)]
    setup, _ = remote.store()
    setup.upload_blobs(cas, {f.digest for r in contenders for f in r.files})
    stores = [remote.store()[0] for _ in contenders]
    k = key()
    barrier = threading.Barrier(len(contenders))
    outcomes: list[bool | None] = [None] * len(contenders)

    def race(i: int) -> None:
        barrier.wait()
        outcomes[i] = stores[i].put_result(k, contenders[i])

    # Meanwhile a reader polls: it must only ever see nothing, or one contender whole.
    reader, reader_warnings = remote.store()
    seen: list[ActionResult] = []
    racing = True

    def read() -> None:
        while racing:
            seen.extend(reader.get_results([k]).values())

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(contenders))]
    watcher = threading.Thread(target=read)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    racing = False
    watcher.join()
    assert reader_warnings == [] and reader.stats.corrupt == 0
    assert all(r in contenders for r in seen)
    assert outcomes.count(True) == 1, outcomes
    winner = contenders[outcomes.index(True)]
    assert remote.fs.cat_file(remote.ac(k)) == winner.to_record(k)
    assert RemoteCache(RemoteConfig(remote.url, storage_options=remote.options)).get_results([k]) == {k: winner}


def test_racing_publishers_in_separate_processes(remote, tmp_path):
    """Processes, not threads: each its own client and connections."""
    cas = new_cas(tmp_path)
    contenders = [make_result(cas, n=1, seed=f"proc{i}") for i in range(3)]
    setup, _ = remote.store()
    setup.upload_blobs(cas, {f.digest for r in contenders for f in r.files})
    k = key()
    go = tmp_path / f"go-{uuid.uuid4().hex}"
    script = r"""
import json, os, sys, time
from mbuild.stores.results import ActionResult
from mbuild.stores.remote import RemoteConfig, RemoteCache
url, options, key, record, go = json.loads(sys.argv[1])
store = RemoteCache(RemoteConfig(url, storage_options=options))
result = ActionResult.from_record(record.encode(), key)
store.missing_blobs(["0" * 32])  # connect before the start line
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)  # poll for the start signal (the race is what is under test)
print(json.dumps(store.put_result(key, result)))
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, json.dumps([remote.url, remote.options, k, r.to_record(k).decode(), str(go)])],
            stdout=subprocess.PIPE, text=True, cwd=REPO,
        )
        for r in contenders
    ]
    go.touch()
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert outs.count(True) == 1, outs
    stored = remote.fs.cat_file(remote.ac(k))
    assert stored == contenders[outs.index(True)].to_record(k)


# --- existence -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [10, 300])
def test_missing_blobs(remote, tmp_path, batch):
    cas = new_cas(tmp_path)
    digests = [cas.put_bytes(f"blob {i} {uuid.uuid4()}".encode()) for i in range(batch)]
    present = set(digests[::2])
    store, _ = remote.store()
    assert store.missing_blobs(digests) == set(digests)
    store.upload_blobs(cas, present)
    assert store.missing_blobs(digests) == set(digests) - present
    assert store.missing_blobs([]) == set()
    # A fresh client agrees (nothing cached in the client).
    assert remote.store()[0].missing_blobs(digests) == set(digests) - present


def test_missing_blobs_with_directories_larger_than_a_page(remote, tmp_path, monkeypatch):
    """When a listing page does not hold a whole prefix directory, ask object by object."""
    monkeypatch.setattr(limits, "LIST_PAGE", 2)
    cas = new_cas(tmp_path)
    digests = [cas.put_bytes(f"paged {i} {uuid.uuid4()}".encode()) for i in range(200)]
    present = set(digests[:150])
    store, _ = remote.store()
    store.upload_blobs(cas, present)
    assert store.missing_blobs(digests) == set(digests) - present


# --- corrupt remote objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,case",
    matrix([f"{d}-{m}" for m in ("whole", "streamed") for d in ("flipped", "truncated", "longer", "deleted")],
           {"flipped-whole", "truncated-streamed", "longer-streamed", "deleted-whole"}),
)
def test_bad_blob_is_never_installed(remote_of, tmp_path, monkeypatch, kind, case):
    remote = remote_of(kind)
    damage, mode = case.split("-")
    if mode == "streamed":  # exercise the streaming path on small data
        monkeypatch.setattr(limits, "WHOLE_MAX", 1000)
        monkeypatch.setattr(limits, "CHUNK", 1024)
    cas = new_cas(tmp_path)
    good = cas.put_bytes(os.urandom(5000))
    data = os.urandom(5000)
    bad = cas.put_bytes(data)
    store, warnings = remote.store()
    store.upload_blobs(cas, [good, bad])
    if damage == "deleted":
        remote.fs.rm_file(remote.blob(bad))
    else:
        tampered = {"flipped": bytes([data[0] ^ 1]) + data[1:], "truncated": data[:2500], "longer": data + b"x"}[damage]
        remote.overwrite(remote.blob(bad), tampered)
    clone = new_cas(tmp_path)
    reader, reader_warnings = remote.store()
    with pytest.raises(RemoteBlobsUnavailableError) as info:
        reader.fetch_blobs(clone, [(good, 5000), (bad, 5000)])
    assert set(info.value.problems) == {bad} and info.value.digest == bad and bad in str(info.value)
    assert not clone.has(bad)  # never installed
    assert clone.read_verified(good)  # the good one is
    assert not list(clone.tmp.iterdir())
    if damage == "deleted":
        assert "missing" in info.value.problems[bad]
        assert reader.stats.corrupt == 0 and reader_warnings == []
    else:
        assert "corrupt" in info.value.problems[bad]
        assert reader.stats.corrupt == 1 and len(reader_warnings) == 1 and bad in reader_warnings[0]
    assert reader.stats.errors == 0 and reader.available  # damage is not an outage


def test_lookup_is_a_miss_when_a_blob_is_gone(remote, tmp_path):
    cas = new_cas(tmp_path)
    kept, broken = make_result(cas, seed="kept"), make_result(cas, seed="broken")
    k1, k2 = key(), key()
    store, _ = remote.store()
    assert store.publish(cas, k1, kept) and store.publish(cas, k2, broken)
    remote.fs.rm_file(remote.blob(broken.files[2].digest))
    assert remote.store()[0].lookup([k1, k2]) == {k1: kept}


def _valid_payload(result: ActionResult) -> dict:
    return orjson.loads(result.to_json())


@pytest.mark.parametrize(
    "kind,damage",
    matrix(["truncated", "garbage", "empty", "bad-checksum", "wrong-tree", "pickle", "dotdot", "absolute", "escaping-link", "absolute-link", "bad-digest"],
           {"truncated", "garbage", "wrong-tree", "dotdot", "escaping-link"}),
)
def test_bad_result_record_is_a_reported_miss(remote_of, tmp_path, kind, damage):
    remote = remote_of(kind)
    cas = new_cas(tmp_path)
    result = make_result(cas, n=2, seed="rec")
    k, other = key(), key()
    store, _ = remote.store()
    assert store.publish_many(cas, {k: result, other: make_result(cas, n=1, seed="other")}) == {k: True, other: True}
    record = result.to_record(k)
    payload = _valid_payload(result)

    def with_tree(p: dict) -> bytes:  # a well-formed record (checksum and tree digest right) around bad content
        files = [OutputFile(*f) for f in p["files"]]
        links = [OutputLink(*link) for link in p["links"]]
        p["tree"] = tree_digest(files, links, p["dirs"], p["value"])
        return raw_record(p)

    if damage == "truncated":
        bad = record[: len(record) // 2]
    elif damage == "garbage":
        bad = os.urandom(300)
    elif damage == "empty":
        bad = b""
    elif damage == "bad-checksum":
        bad = b"0" * 32 + record[32:]
    elif damage == "wrong-tree":
        payload["value"] = {"seed": "forged"}
        bad = raw_record(payload)  # checksum right, tree digest no longer matches the content
    elif damage == "pickle":
        import pickle

        bad = pickle.dumps(result)
    elif damage == "dotdot":
        payload["files"][1][0] = "out/../../etc/passwd"
        bad = with_tree(payload)
    elif damage == "absolute":
        payload["files"][1][0] = "/etc/passwd"
        bad = with_tree(payload)
    elif damage == "escaping-link":
        payload["links"] = [["out/link", "../../outside"]]
        bad = with_tree(payload)
    elif damage == "absolute-link":
        payload["links"] = [["out/link", "/etc"]]
        bad = with_tree(payload)
    else:
        payload["files"][1][1] = "../" + payload["files"][1][1][3:]
        bad = with_tree(payload)
    remote.overwrite(remote.ac(k), bad)
    reader, warnings = remote.store()
    assert list(reader.get_results([k, other])) == [other]  # the bad one is a miss, the good one a hit
    assert list(reader.lookup([k, other])) == [other]
    assert reader.stats.corrupt == 2 and len(warnings) == 2 and k in warnings[0] and "corrupt" in warnings[0]
    assert reader.stats.errors == 0 and reader.available


def test_bad_keys_and_digests_are_refused_before_any_request(remote, tmp_path):
    store, _ = remote.store()
    cas = new_cas(tmp_path)
    for bad in ["../../etc/passwd", "A" * 32, "0" * 31, "0" * 33, "g" * 32, "/" + "0" * 31, "0" * 16 + "/" + "0" * 15]:
        with pytest.raises(ValueError):
            store.get_results([bad])
        with pytest.raises(ValueError):
            store.missing_blobs([bad])
        with pytest.raises(ValueError):
            store.fetch_blobs(cas, [(bad, 1)])
        with pytest.raises(ValueError):
            store.put_result(bad, make_result(cas))
    with pytest.raises(ValueError):
        store.fetch_blobs(cas, [("0" * 32, -1)])
    assert store.stats.requests == 0


# --- read-only clients -----------------------------------------------------------------------------


def test_read_only_client_writes_nothing(remote, tmp_path):
    cas = new_cas(tmp_path)
    published = make_result(cas, seed="ro")
    k = key()
    writer, _ = remote.store()
    writer.publish(cas, k, published)
    before = remote.snapshot()
    assert before

    reader, warnings = remote.store(upload=False)
    clone = new_cas(tmp_path)
    new = make_result(cas, seed="ro-new")
    assert reader.get_results([k, key()]) == {k: published}
    assert reader.lookup([k]) == {k: published}
    reader.fetch_blobs(clone, [(f.digest, f.size) for f in published.files])
    assert reader.missing_blobs(f.digest for f in new.files) == {f.digest for f in new.files}
    requests = reader.stats.requests
    assert reader.put_result(key(), new) is False
    assert reader.publish(cas, key(), new) is False
    assert reader.upload_blobs(cas, [f.digest for f in new.files]) == 0
    assert reader.stats.requests == requests  # the write calls sent nothing at all
    assert remote.snapshot() == before
    assert reader.stats.bytes_up == 0 and warnings == []


def test_read_only_client_on_an_empty_location_creates_nothing(remote, tmp_path):
    empty = Remote(remote.kind, remote.url + "-never-written", remote.options)
    before = remote.snapshot()
    reader, _ = empty.store(upload=False)
    cas = new_cas(tmp_path)
    assert reader.get_results([key()]) == {}
    assert reader.missing_blobs([cas.put_bytes(b"x")]) == {digest_bytes(b"x")}
    assert remote.snapshot() == before
    if remote.kind == "file":
        assert not os.path.exists(empty.root)


# --- outages -----------------------------------------------------------------------------------------


@pytest.fixture(params=["gcs", "s3"])
def own_server(request):
    """A server of our own, to stop in the middle of a test."""
    start = servers.gcs_emulator if request.param == "gcs" else servers.s3_server
    with start() as server:
        options = dict(server.storage_options)
        if request.param == "s3":
            import fsspec

            fsspec.filesystem("s3", **options, skip_instance_cache=True).mkdir("outage")
            url = "s3://outage/cache"
        else:
            url = server.make_bucket("outage") + "/cache"
        yield server, url, options


def test_server_stopped_mid_build_circuit_breaker(own_server, tmp_path):
    server, url, options = own_server
    warnings: list[str] = []
    timeout = 2.0  # (a loaded machine's moto must still answer in time before the stop)
    store = RemoteCache(RemoteConfig(url, timeout=timeout, max_failures=3, storage_options=options), on_warning=warnings.append)
    cas = new_cas(tmp_path)
    result = make_result(cas, seed="outage")
    k = key()
    assert store.publish(cas, k, result)
    assert store.lookup([k]) == {k: result}
    server.stop()

    started = time.monotonic()
    assert store.get_results([k] + [key() for _ in range(9)]) == {}  # ten requests fail together
    first_call = time.monotonic() - started
    assert first_call < 2 * timeout + 1.0, first_call  # bounded by the deadline, not by the clients' retries
    assert not store.available
    assert len(warnings) == 1 and "remote cache unreachable" in warnings[0] and "continuing without it" in warnings[0]

    # From now on every call is an immediate miss or no-op, without a request.
    requests = store.stats.requests
    started = time.monotonic()
    assert store.get_results([k]) == {}
    assert store.lookup([k]) == {}
    assert store.missing_blobs([f.digest for f in result.files]) == {f.digest for f in result.files}
    assert store.put_result(key(), result) is False
    assert store.publish(cas, key(), result) is False
    assert store.upload_blobs(cas, [f.digest for f in result.files]) == 0
    with pytest.raises(RemoteBlobsUnavailableError):
        store.fetch_blobs(new_cas(tmp_path), [(f.digest, f.size) for f in result.files])
    assert time.monotonic() - started < 0.5
    assert store.stats.requests == requests
    assert len(warnings) == 1  # said once


def test_consecutive_single_failures_open_the_breaker(own_server, tmp_path):
    server, url, options = own_server
    warnings: list[str] = []
    timeout = 5.0  # the first request also starts the client (a botocore session): >1 s on a loaded machine
    store = RemoteCache(RemoteConfig(url, timeout=timeout, max_failures=3, storage_options=options), on_warning=warnings.append)
    assert store.get_results([key()]) == {}  # a normal miss: not a failure
    assert store.stats.errors == 0
    server.stop()
    started = time.monotonic()
    for i in range(3):
        assert store.available
        assert store.get_results([key()]) == {}
        assert store.stats.errors == i + 1
    assert not store.available and len(warnings) == 1
    assert time.monotonic() - started < 3 * timeout + 2.0


@pytest.mark.parametrize("kind", ["gcs", "s3"])
def test_slow_responses_fail_fast_and_count_as_failures(kind, buckets, gcs_server, s3_server, s3_options, tmp_path):
    server = gcs_server if kind == "gcs" else s3_server
    cas = new_cas(tmp_path)
    result = make_result(cas, seed="slow")
    k = key()
    url = f"{buckets[kind]}/slow-{uuid.uuid4().hex[:8]}"
    base_options = server.storage_options if kind == "gcs" else s3_options
    RemoteCache(RemoteConfig(url, storage_options=base_options)).publish(cas, k, result)

    proxy = servers.DelayProxy(int(server.endpoint.rsplit(":", 1)[1]), delay=1.0)
    try:
        options = {**base_options, "endpoint_url": proxy.endpoint}
        # Through the proxy, a patient client gets its answer: the proxy is slow, not broken.
        patient = RemoteCache(RemoteConfig(url, timeout=10.0, storage_options=options))
        assert patient.get_results([k]) == {k: result}
        # An impatient one gives up at its timeout (0.3 s), far sooner than the answer would come
        # (60 s from now on), counts a failure, and opens the breaker.
        proxy.delay = 60.0
        warnings: list[str] = []
        store = RemoteCache(RemoteConfig(url, timeout=0.3, max_failures=2, storage_options=options), on_warning=warnings.append)
        started = time.monotonic()
        assert store.get_results([k]) == {}
        assert time.monotonic() - started < 20
        assert store.stats.errors == 1 and store.available
        assert store.missing_blobs([result.files[0].digest]) == {result.files[0].digest}
        assert store.stats.errors == 2 and not store.available
        assert len(warnings) == 1 and "unreachable" in warnings[0] and "timed out" in warnings[0]
        assert time.monotonic() - started < 40  # two timeouts, not two 60 s answers
    finally:
        proxy.close()


# --- large blobs -----------------------------------------------------------------------------------

LARGE_SCRIPT = r"""
import json, os, re, sys, time
from pathlib import Path
from mbuild.stores.cas import LocalCAS
from mbuild.stores.remote import RemoteConfig, RemoteCache

url, options, workdir, size = json.loads(sys.argv[1])
def rss(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
def reset_peak():
    open("/proc/self/clear_refs", "w").write("5")
    return rss("VmRSS")

cas = LocalCAS(Path(workdir) / "a")
src = Path(workdir) / "big"
with open(src, "wb") as f:
    for _ in range(size >> 22):
        f.write(os.urandom(1 << 22))
digest, size = cas.put_file(src, move=True)
events = {"up": [], "down": []}
store = RemoteCache(RemoteConfig(url, storage_options=options))
store.missing_blobs(["0" * 32])  # connect: sessions and imports are not what is measured
base = reset_peak()
t = time.perf_counter()
sent = store.upload_blobs(cas, [digest], progress=lambda *a: events["up"].append(a))
up = time.perf_counter() - t
up_peak = rss("VmHWM") - base

clone = LocalCAS(Path(workdir) / "b")
reader = RemoteCache(RemoteConfig(url, storage_options=options))
reader.missing_blobs(["0" * 32])
base = reset_peak()
t = time.perf_counter()
received = reader.fetch_blobs(clone, [(digest, size)], progress=lambda *a: events["down"].append(a))
down = time.perf_counter() - t
down_peak = rss("VmHWM") - base
same = clone.verify(digest, size) is not None
print(json.dumps({"size": size, "sent": sent, "received": received, "up_peak": up_peak, "down_peak": down_peak,
                  "up_s": up, "down_s": down, "same": same, "events": events}))
"""


def test_large_blob_streamed_with_bounded_memory(remote, tmp_path):
    size = 160 << 20
    work = tmp_path / "large"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", LARGE_SCRIPT, json.dumps([remote.url, remote.options, str(work), size])],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    print({k: v for k, v in out.items() if k != "events"})
    assert out["same"] and out["sent"] == out["received"] == size
    # Peak resident memory grows by well under the blob's size (bounded buffers, not the whole blob).
    assert out["up_peak"] < size // 2, out
    assert out["down_peak"] < size // 2, out
    for direction in ("up", "down"):
        events = out["events"][direction]
        assert len(events) >= 4, (direction, events)  # progress is visible along the way
        done = [e[1] for e in events]
        assert done == sorted(done) and events[-1][1:] == [size, size] and events[0][1] < size


# --- costs on the no-op path -------------------------------------------------------------------------


def test_importing_the_module_loads_no_fsspec():
    code = (
        "import sys, mbuild.stores.remote as r\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fsspec', 'gcsfs', 's3fs', 'aiohttp', 'botocore')]\n"
        "assert not bad, bad\n"
        "import tempfile\n"
        "s = r.RemoteCache(r.RemoteConfig('file://' + tempfile.mkdtemp()))\n"
        "assert s.get_results(['0' * 32]) == {}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fsspec', 'gcsfs', 's3fs')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


# --- bounded reads: records that never end, never arrive, or are not files ---------------------------


def _published(remote: Remote, tmp_path: Path) -> tuple[LocalCAS, str, ActionResult]:
    cas = new_cas(tmp_path)
    result = make_result(cas, n=2, seed="bounded")
    k = key()
    assert remote.store()[0].publish(cas, k, result)
    return cas, k, result


def _within(seconds: float, fn):
    """fn() on a daemon thread: its value (or exception), or a failure after `seconds` instead of a
    hung test run."""
    out: dict = {}

    def call() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"still blocked after {seconds}s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_fifo_record_or_blob_is_corrupt_and_never_waited_for(remote_of, tmp_path):
    """file://: a FIFO where a record or a blob should be is refused at once (opened without
    blocking, checked to be a regular file); nobody ever writes to it."""
    remote = remote_of("file")
    cas, k, result = _published(remote, tmp_path)
    os.unlink(remote.ac(k))
    os.mkfifo(remote.ac(k))
    blob = result.files[0]
    os.unlink(remote.blob(blob.digest))
    os.mkfifo(remote.blob(blob.digest))
    reader, warnings = remote.store(timeout=30.0)
    assert _within(20, lambda: reader.get_results([k])) == {}
    with pytest.raises(RemoteBlobsUnavailableError) as info:
        _within(20, lambda: reader.fetch_blobs(new_cas(tmp_path), [(blob.digest, blob.size)]))
    assert "corrupt" in info.value.problems[blob.digest]
    assert reader.stats.corrupt == 2 and all("FIFO" in w for w in warnings) and len(warnings) == 2
    assert reader.stats.errors == 0 and reader.available  # damage, not an outage


def test_a_record_linked_to_dev_zero_is_refused_without_reading(remote_of, tmp_path):
    remote = remote_of("file")
    _, k, _ = _published(remote, tmp_path)
    os.unlink(remote.ac(k))
    os.symlink("/dev/zero", remote.ac(k))
    reader, warnings = remote.store()
    assert _within(20, lambda: reader.get_results([k])) == {}
    assert reader.stats.bytes_down == 0
    assert len(warnings) == 1 and "character device" in warnings[0] and k in warnings[0]


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_oversized_record_is_read_only_up_to_the_limit(remote_of, tmp_path, monkeypatch, kind):
    """A record past MAX_RECORD is refused having read at most one byte more. file:// with a real
    100 MB record; on the servers the limit is lowered to 1 MiB and the record is 5 MiB."""
    remote = remote_of(kind)
    _, k, _ = _published(remote, tmp_path)
    if kind == "file":
        size, limit = 100 << 20, limits.MAX_RECORD
        with open(remote.ac(k), "r+b") as f:
            f.truncate(size)  # sparse: 100 MB that costs no disk
    else:
        size, limit = 5 << 20, 1 << 20
        monkeypatch.setattr(limits, "MAX_RECORD", limit)
        remote.overwrite(remote.ac(k), os.urandom(size))
    reader, warnings = remote.store(timeout=60.0)  # not a test of deadlines: a slow server must not time out
    assert reader.get_results([k]) == {}
    assert reader.stats.bytes_down <= limit + 1 < size
    assert len(warnings) == 1 and "larger than" in warnings[0] and reader.stats.errors == 0


HUNG_MOUNT_SCRIPT = r"""
import json, os, sys, threading, time
from mbuild.stores.remote.backends import file as file_backend
from mbuild.stores.remote import RemoteConfig, RemoteCache

url, key = json.loads(sys.argv[1])
stuck = threading.Event()

def read_on_a_hung_mount(path, sink):  # what a read(2) on a dead NFS server does: never return
    stuck.set()
    threading.Event().wait()

file_backend._copy_out = read_on_a_hung_mount
warnings = []
store = RemoteCache(RemoteConfig(url, timeout=1.0, max_failures=1), on_warning=warnings.append)
t = time.monotonic()
print(json.dumps({"results": store.get_results([key]), "seconds": time.monotonic() - t, "stuck": stuck.is_set(),
                  "warnings": warnings, "available": store.available}), flush=True)
sys.exit(0)  # the interpreter must not wait for the stuck read
"""


def test_a_read_stuck_on_a_hung_mount_costs_its_deadline_and_never_delays_exit(remote_of, tmp_path):
    """A read that never returns (a hard NFS mount whose server died) gives up at its deadline and
    the process exits at once. A mock stands in for the hung mount: the test cannot make one."""
    remote = remote_of("file")
    _, k, _ = _published(remote, tmp_path)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HUNG_MOUNT_SCRIPT, json.dumps([remote.url, k])], capture_output=True, text=True, timeout=60, cwd=REPO)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stuck"] and out["results"] == {} and not out["available"]
    assert out["seconds"] < 5, out  # the deadline (1 s), not the read
    assert len(out["warnings"]) == 1 and "timed out" in out["warnings"][0]
    assert elapsed < out["seconds"] + 20, (elapsed, out)  # exit did not wait for the stuck thread


def _service_account(token_uri: str) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "test", "private_key_id": "k", "private_key": pem,
            "client_email": "builder@test.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}


TOKEN_SCRIPT = r"""
import json, sys, time
from mbuild.stores.remote import RemoteConfig, RemoteCache

url, options = json.loads(sys.argv[1])
warnings = []
store = RemoteCache(RemoteConfig(url, timeout=1.0, storage_options=options), on_warning=warnings.append)
t = time.monotonic()
results = store.get_results(["0" * 32])
first = time.monotonic() - t
t = time.monotonic()
missing = store.missing_blobs(["1" * 32])
print(json.dumps({"results": results, "first": first, "missing": sorted(missing), "second": time.monotonic() - t,
                  "available": store.available, "warnings": warnings}), flush=True)
sys.exit(0)  # with the client's event loop still blocked: the exit must not wait for it
"""


def test_a_token_endpoint_that_never_answers_costs_seconds(buckets, gcs_server, tmp_path):
    """gcsfs refreshes credentials synchronously on its event loop: with a token endpoint that never
    answers, no request deadline can fire. The caller gives up once the loop has not answered for
    the timeout: a miss after about two timeouts, the remote off, one warning, a prompt exit. (In a
    subprocess: the blocked loop is the process's, shared by every gcsfs client in it.)"""
    hole = servers.black_hole()
    try:
        options = {"endpoint_url": gcs_server.endpoint, "token": _service_account(hole.endpoint + "/token")}
        url = f"{buckets['gcs']}/sa-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", TOKEN_SCRIPT, json.dumps([url, options])], capture_output=True, text=True, timeout=120, cwd=REPO)
        elapsed = time.monotonic() - started
    finally:
        hole.close()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["results"] == {} and out["first"] < 8, out
    assert not out["available"] and len(out["warnings"]) == 1 and "stopped answering" in out["warnings"][0], out
    assert out["missing"] == ["1" * 32] and out["second"] < 0.5, out
    assert elapsed < out["first"] + 30, (elapsed, out)  # (interpreter start and imports; not the blocked loop)


@pytest.mark.parametrize("kind", ["gcs", "s3"])
def test_a_black_hole_opens_the_breaker_within_the_deadlines(kind, buckets, gcs_server, s3_options, tmp_path):
    """An address that accepts connections and never answers: max_failures requests, each at its
    deadline, then nothing waits any more."""
    hole = servers.black_hole()
    try:
        base = gcs_server.storage_options if kind == "gcs" else s3_options
        warnings: list[str] = []
        store = RemoteCache(RemoteConfig(f"{buckets[kind]}/hole", timeout=1.0, max_failures=3, storage_options={**base, "endpoint_url": hole.endpoint}), on_warning=warnings.append)
        cas = new_cas(tmp_path)
        result = make_result(cas, n=1, seed="hole")
        started = time.monotonic()
        for _ in range(3):
            assert store.get_results([key()]) == {}
        assert not store.available
        assert time.monotonic() - started < 3 * 2.0 + 3  # three deadlines (a loaded machine's margin)
        started = time.monotonic()
        assert store.publish(cas, key(), result) is False and store.lookup([key()]) == {}
        assert time.monotonic() - started < 0.5
        assert len(warnings) == 1 and "unreachable" in warnings[0]
    finally:
        hole.close()


# --- refused writes, healing, and health shared between stores -----------------------------------------


def test_writes_refused_by_a_read_only_remote_warn_once_and_reads_go_on(remote_of, tmp_path):
    remote = remote_of("file")
    cas, k, result = _published(remote, tmp_path)
    with servers.read_only(Path(remote.root)):
        store, warnings = remote.store()
        for i in range(3):
            assert store.publish(cas, key(), make_result(cas, n=1, seed=f"ro{i}")) is False
        assert len(warnings) == 1 and "uploads refused" in warnings[0]
        assert "Read-only file system" in warnings[0] or "Permission denied" in warnings[0]
        assert not store.may_upload and store.available and store.stats.errors == 0
        assert store.lookup([k]) == {k: result}  # reads go on


def test_a_corrupt_blob_is_replaced_by_the_next_verified_upload(remote, tmp_path):
    cas = new_cas(tmp_path)
    result = make_result(cas, n=2, seed="heal")
    k = key()
    assert remote.store()[0].publish(cas, k, result)
    bad = result.files[0]
    good_bytes = cas.read_verified(bad.digest)
    remote.overwrite(remote.blob(bad.digest), bytes([good_bytes[0] ^ 1]) + good_bytes[1:])
    # Not a test of deadlines: a generous one, so a slow server on a loaded machine cannot open the
    # breaker (which rightly skips the healing upload).
    client, warnings = remote.store(timeout=120.0)  # fetches, finds it corrupt, then rebuilds and publishes
    clone = new_cas(tmp_path)
    with pytest.raises(RemoteBlobsUnavailableError):
        client.fetch_blobs(clone, [(f.digest, f.size) for f in result.files])
    assert client.publish(cas, k, result) is False  # the record existed: kept
    assert client.stats.errors == 0, warnings
    assert remote.fs.cat_file(remote.blob(bad.digest)) == good_bytes  # the blob is healed
    fresh = new_cas(tmp_path)
    assert remote.store()[0].fetch_blobs(fresh, [(f.digest, f.size) for f in result.files]) == result.total_bytes


def test_a_record_naming_a_blob_nobody_can_repair_is_replaced(remote, tmp_path):
    """A rebuild that produces other bytes (a nondeterministic action) cannot repair the corrupt
    blob: its verified result replaces the record that names it."""
    cas = new_cas(tmp_path)
    first = make_result(cas, n=1, seed="first")
    k = key()
    assert remote.store()[0].publish(cas, k, first)
    remote.overwrite(remote.blob(first.files[0].digest), b"x" * first.files[0].size)
    client, _ = remote.store()
    with pytest.raises(RemoteBlobsUnavailableError):
        client.fetch_blobs(new_cas(tmp_path), [(first.files[0].digest, first.files[0].size)])
    rebuilt = make_result(cas, n=1, seed="rebuilt")
    assert client.publish(cas, k, rebuilt) is True
    assert remote.store()[0].lookup([k]) == {k: rebuilt}
    # Nothing else is ever replaced: a healthy record stays.
    assert remote.store()[0].publish(cas, k, make_result(cas, n=1, seed="third")) is False
    assert remote.store()[0].lookup([k]) == {k: rebuilt}


def test_a_corrupt_record_is_replaced_by_the_next_verified_result(remote, tmp_path):
    cas = new_cas(tmp_path)
    result = make_result(cas, n=1, seed="rec-heal")
    k = key()
    assert remote.store()[0].publish(cas, k, result)
    remote.overwrite(remote.ac(k), b"garbage")
    client, warnings = remote.store()
    assert client.lookup([k]) == {} and len(warnings) == 1
    assert client.publish(cas, k, result) is True
    assert remote.store()[0].lookup([k]) == {k: result}


def test_health_shared_through_the_local_database(remote_of, tmp_path):
    """Two stores on one build's health record: a breaker opened by one is open for the other at
    once, and failures add up across them; another build starts afresh."""
    from mbuild.stores.localdb import LocalDB

    db = LocalDB(tmp_path / "db")
    url = f"gs://nowhere-{uuid.uuid4().hex[:8]}/c"
    hole = servers.black_hole()
    try:
        config = RemoteConfig(url, timeout=1.0, max_failures=2, storage_options={"endpoint_url": hole.endpoint, "token": "anon"})
        one_warnings, two_warnings = [], []
        one = RemoteCache(config, on_warning=one_warnings.append, health=db.remote_health(url, "build-1"))
        two = RemoteCache(config, on_warning=two_warnings.append, health=db.remote_health(url, "build-1"))
        assert one.get_results([key()]) == {} and one.available  # one failure
        assert two.get_results([key()]) == {} and not two.available  # the second, in the other store: open
        assert not one.available and one.stats.requests == 1
        assert len(two_warnings) == 1 and len(one_warnings) == 1  # (each process reports it; the driver shows one)
        later = RemoteCache(config, health=db.remote_health(url, "build-2"))
        assert later.available
    finally:
        hole.close()
