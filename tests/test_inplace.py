"""In-place outputs: an action writes its output straight under [outputs].prefix (the real GCS
emulator, or a local directory); mbuild records the store's listing as the manifest, checks hits by
listing again, clears a crashed attempt's leftovers, and never copies a byte."""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ran, statuses
from mbuild.stores.inplace.manifest import Entry, manifest_digest

RULES = '''
import os
from mbuild import attr, rule

@rule(attrs={"n": attr.int(default=200), "tag": attr.string(default="")}, in_place=True, outputs=["shard-00000.bin"])
def shards(ctx):
    """Write n objects at ctx.out_url in one batch (a crash, asked for by an undeclared variable, stops half way)."""
    objects = {f"{ctx.out_url}/shard-{i:05d}.bin": (f"shard {i}\\n" * 8).encode() for i in range(ctx.attr.n)}
    if os.environ.get("INPLACE_CRASH"):
        half = dict(list(objects.items())[: ctx.attr.n // 2])
        half[f"{ctx.out_url}/junk-of-a-crashed-attempt.bin"] = b"junk"
        ctx.out_fs.pipe(half)
        os._exit(9)  # the worker dies mid-write
    ctx.out_fs.pipe(objects)
    with open(os.environ["INPLACE_LOG"], "a") as f:
        f.write("shards\\n")
    return {"n": ctx.attr.n}

@rule(attrs={"src": attr.label()}, outputs=["count.txt"])
def count(ctx):
    fs = ctx.fs(ctx.inputs.src)
    names = sorted(fs.find(str(ctx.inputs.src)))
    data = [fs.cat(n) for n in names if "shard-" in n]
    (ctx.out / "count.txt").write_text(f"{len(data)} {sum(map(len, data))}")
    with open(os.environ["INPLACE_LOG"], "a") as f:
        f.write("count\\n")
'''

BUILD = 'shards(name="shards", tag="{tag}")\ncount(name="count", src=":shards")\n'


def setup(ws, prefix: str, options: dict, tag: str = "") -> None:
    ws.write(f"{ws.rules}_inplace.py", RULES)
    ws.build_file("p", f"from {ws.rules}_inplace import *\n" + BUILD.format(tag=tag))
    lines = ["[outputs]", f"prefix = {json.dumps(prefix)}"]
    if options:
        lines += ["[outputs.options]"] + [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    ws.write("WORKSPACE.toml", "\n".join(lines) + "\n")


def build(ws, *labels, env=None, ok=True, log=None):
    events = ws.root / f".events-{len(list(ws.root.glob('.events-*')))}.jsonl"
    proc = ws.mbuild("build", "--events", str(events), *labels, env={"INPLACE_LOG": str(log), **(env or {})})
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    return records, proc.stdout + proc.stderr


def url_of(output: str, label: str = "//p:shards") -> str:
    return re.search(re.escape(label) + r": in place at (\S+)", output).group(1)


@pytest.fixture
def bucket(gcs_server, tmp_path):
    import fsspec

    name = f"inplace-{os.getpid()}-{len(os.listdir(tmp_path))}-{os.urandom(3).hex()}"
    root = gcs_server.make_bucket(name).replace("gcs://", "gs://")
    return root, fsspec.filesystem("gcs", skip_instance_cache=True, **gcs_server.storage_options)


def test_in_place_on_gcs_across_clones_changes_and_early_cutoff(ws, tmp_path, gcs_server, bucket):
    root, fs = bucket
    log = tmp_path / "runs.log"
    setup(ws, f"{root}/out", gcs_server.storage_options)
    ws.write("WORKSPACE.toml", ws.root.joinpath("WORKSPACE.toml").read_text() + textwrap.dedent(f"""
        [remote]
        url = "{root}/cache"
        [remote.options]
        endpoint_url = "{gcs_server.endpoint}"
        token = "anon"
    """))
    events, out = build(ws, "//p:count", "//p:shards", log=log)
    assert ran(events) == {"//p:shards", "//p:count"}
    url = url_of(out)
    assert url.startswith(f"{root}/out/p/shards-") and len(url.rsplit("-", 1)[1]) == 16
    names = fs.find(url)
    assert len([n for n in names if "/shard-" in n]) == 200
    assert any(n.endswith(".mbuild-provenance.json") for n in names)
    provenance = json.loads(fs.cat(f"{url}/.mbuild-provenance.json"))
    assert provenance["label"] == "//p:shards" and provenance["objects"] == 200 and provenance["url"] == url
    expected = f"200 {sum(len((f'shard {i}' + chr(10)) * 8) for i in range(200))}"
    assert (ws.root / "mbuild-out/p/count/count.txt").read_text() == expected

    # a second clone at another path: a remote hit, the same URL, nothing downloaded, nothing run
    other = tmp_path / "elsewhere" / "clone"
    shutil.copytree(ws.root, other, ignore=shutil.ignore_patterns(".mbuild", "mbuild-out", ".events-*"))
    clone = type(ws)(other, ws.rules)
    events, out2 = build(clone, "//p:shards", log=log)
    assert ran(events) == set() and statuses(events)["//p:shards"] == "cache_hit"
    assert events[-1]["summary"]["remote_hits"] == 1 and events[-1]["summary"]["bytes_down"] == 0
    assert url_of(out2) == url

    # one object changed under the prefix: the next build notices, reruns, and (same bytes) cuts off
    fs.pipe(f"{url}/shard-00007.bin", b"tampered")
    log.write_text("")
    events, out = build(ws, "//p:count", log=log)
    assert statuses(events)["//p:shards"] == "ran" and statuses(events)["//p:count"] == "cache_hit"
    assert out.count("shard-00007.bin differs") == 1 and log.read_text() == "shards\n"
    assert fs.cat(f"{url}/shard-00007.bin") == (b"shard 7\n" * 8)

    # one object deleted: the same
    fs.rm(f"{url}/shard-00123.bin")
    events, _ = build(ws, "//p:count", log=log)
    assert statuses(events)["//p:shards"] == "ran" and statuses(events)["//p:count"] == "cache_hit"

    # unchanged: a hit that lists once and runs nothing
    log.write_text("")
    events, _ = build(ws, "//p:count", log=log)
    assert ran(events) == set() and log.read_text() == ""

    # a new key (a changed attribute) that writes identical bytes at a new URL: early cutoff
    setup_text = ws.root.joinpath("p/BUILD.py").read_text().replace('tag=""', 'tag="v2"')
    ws.root.joinpath("p/BUILD.py").write_text(setup_text)
    events, out = build(ws, "//p:count", "//p:shards", log=log)
    assert statuses(events)["//p:shards"] == "ran" and statuses(events)["//p:count"] == "cache_hit"
    assert url_of(out) != url and events[-1]["summary"]["early_cutoff"] == 1


def test_a_crash_mid_write_is_never_served_and_the_next_attempt_completes(ws, tmp_path, gcs_server, bucket):
    root, fs = bucket
    log = tmp_path / "runs.log"
    setup(ws, f"{root}/out", gcs_server.storage_options)
    events, out = build(ws, "//p:count", env={"INPLACE_CRASH": "1"}, ok=False, log=log)
    assert statuses(events)["//p:shards"] == "failed" and "//p:count" not in ran(events)
    [leftover] = fs.ls(f"{root}/out/p")
    assert len(fs.find(leftover)) == 100 + 2  # half the shards, the junk, mbuild's marker
    events, out = build(ws, "//p:count", "//p:shards", log=log)
    assert ran(events) == {"//p:shards", "//p:count"}  # the leftover was not a result
    url = url_of(out)
    assert url == "gs://" + leftover.strip("/")
    names = [n.rsplit("/", 1)[1] for n in fs.find(url)]
    assert "junk-of-a-crashed-attempt.bin" not in names and sum(n.startswith("shard-") for n in names) == 200
    assert (ws.root / "mbuild-out/p/count/count.txt").read_text().startswith("200 ")


def test_in_place_in_a_local_directory(ws, tmp_path):
    prefix = tmp_path / "outputs"
    log = tmp_path / "runs.log"
    setup(ws, str(prefix), {})
    events, out = build(ws, "//p:count", "//p:shards", log=log)
    assert ran(events) == {"//p:shards", "//p:count"}
    url = url_of(out)
    assert url.startswith(str(prefix) + "/p/shards-") and len(list(Path(url).glob("shard-*"))) == 200
    assert (ws.root / "mbuild-out/p/count/count.txt").read_text().startswith("200 ")
    events, _ = build(ws, "//p:count", log=log)
    assert ran(events) == set()
    Path(url, "shard-00001.bin").write_bytes(b"other bytes")
    events, _ = build(ws, "//p:count", log=log)
    assert statuses(events)["//p:shards"] == "ran" and statuses(events)["//p:count"] == "cache_hit"
    # something mbuild did not write at the path (its marker gone): refused, never deleted
    Path(url, ".mbuild-inplace.json").unlink()
    Path(url, "shard-00002.bin").write_bytes(b"someone else's")
    events, out = build(ws, "//p:count", log=log, ok=False)
    assert statuses(events)["//p:shards"] == "failed" and "mbuild did not write" in out
    assert Path(url, "shard-00002.bin").read_bytes() == b"someone else's"


# --- the manifest's digest ----------------------------------------------------------------------

_paths = st.lists(st.text("abc/._-0", min_size=1, max_size=6), min_size=1, max_size=8, unique=True)
_checksums = st.sampled_from(["crc32c=AAAA==", "crc32c=AAAB==,md5=XUFA==", "etag=5d41", "xxh3=00ff"])


@st.composite
def manifests(draw):
    paths = draw(_paths)
    return [Entry(p, draw(st.integers(0, 1 << 40)), draw(_checksums)) for p in paths]


@settings(max_examples=200, deadline=None)
@given(manifests(), st.randoms(use_true_random=False), st.data())
def test_manifest_digest_is_order_free_and_sees_every_difference(entries, rng, data):
    shuffled = list(entries)
    rng.shuffle(shuffled)
    assert manifest_digest(shuffled) == manifest_digest(entries)
    i = data.draw(st.integers(0, len(entries) - 1))
    e = entries[i]
    field = data.draw(st.sampled_from(["path", "size", "checksum", "drop", "add"]))
    changed = list(entries)
    if field == "path":
        new = e.path + "x"
        if any(x.path == new for x in entries):
            return
        changed[i] = Entry(new, e.size, e.checksum)
    elif field == "size":
        changed[i] = Entry(e.path, e.size + 1, e.checksum)
    elif field == "checksum":
        changed[i] = Entry(e.path, e.size, e.checksum + "0")
    elif field == "drop":
        changed.pop(i)
    else:
        if any(x.path == e.path + "/new" for x in entries):
            return
        changed.append(Entry(e.path + "/new", 0, e.checksum))
    assert manifest_digest(changed) != manifest_digest(entries)


def test_in_place_on_s3(ws, tmp_path, s3_server):
    """The same on S3 (moto): ETags of single-part uploads are content MD5s."""
    import fsspec

    root = s3_server.make_bucket(f"inplace-{os.getpid()}-{os.urandom(3).hex()}")
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_server.storage_options)
    log = tmp_path / "runs.log"
    setup(ws, f"{root}/out", s3_server.storage_options)
    ws.root.joinpath("p/BUILD.py").write_text(ws.root.joinpath("p/BUILD.py").read_text().replace('name="shards",', 'name="shards", n=20,'))
    events, out = build(ws, "//p:count", "//p:shards", log=log, env=s3_server.env)
    assert ran(events) == {"//p:shards", "//p:count"}
    url = url_of(out)
    events, _ = build(ws, "//p:count", log=log, env=s3_server.env)
    assert ran(events) == set()
    fs.pipe(f"{url}/shard-00003.bin", b"changed")
    events, _ = build(ws, "//p:count", log=log, env=s3_server.env)
    assert statuses(events)["//p:shards"] == "ran" and statuses(events)["//p:count"] == "cache_hit"


def test_an_in_place_record_round_trips_and_its_digest_ignores_the_url():
    from mbuild.errors import CacheCorruptError
    from mbuild.stores.inplace.manifest import Place
    from mbuild.stores.results import ActionResult

    entries = (Entry("a.bin", 3, "crc32c=AAAA==,md5=XUFA=="), Entry("d/b.bin", 5, "crc32c=BBBB=="))
    result = ActionResult.make((), (), (), {"n": 2}, {}, Place("gs://b/out/p/x-0123456789abcdef", entries))
    key = "0" * 32
    back = ActionResult.from_record(result.to_record(key), key, check_tree=True)
    assert back == result and back.place.entries == entries
    elsewhere = ActionResult.make((), (), (), {"n": 2}, {}, Place("gs://b/out/p/x-fedcba9876543210", entries[::-1]))
    assert elsewhere.tree == result.tree  # the URL holds the key: not in the digest (early cutoff)
    assert ActionResult.make((), (), (), {"n": 2}).tree != result.tree
    raw = json.loads(result.to_json(key))
    raw["place"]["entries"][0][1] = 4  # a size that is not what the tree digest covers
    with pytest.raises(CacheCorruptError):
        ActionResult.from_json(json.dumps(raw).encode(), check_tree=True, key=key)
    raw["place"]["entries"][0] = ["../escape", 3, "crc32c=AAAA=="]
    with pytest.raises(CacheCorruptError):
        ActionResult.from_json(json.dumps(raw).encode(), check_tree=True, key=key)


def test_a_genrule_writes_in_place_at_out_url(ws, tmp_path):
    prefix = tmp_path / "outputs"
    ws.write("WORKSPACE.toml", f"[outputs]\nprefix = {json.dumps(str(prefix))}\n")
    ws.build_file("g", 'genrule(name="made", outs=["d/a.txt"], cmd="mkdir -p $(OUT_URL)/d && echo hi > $(OUTS) && test \\"$OUT_URL\\" = $(OUT_URL)", in_place=True)\n')
    events = ws.build("//g:made")
    assert ran(events) == {"//g:made"}
    [made] = prefix.joinpath("g").glob("made-*")
    assert made.joinpath("d/a.txt").read_text() == "hi\n" and made.joinpath(".mbuild-provenance.json").exists()
    assert not (ws.root / "mbuild-out/g/made").exists()
