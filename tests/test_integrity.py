"""Never a wrong byte, never a bricked workspace: damage done to a real cache on disk, then builds.

Every test damages real files (the tree cache, the CAS, the LMDB database) the way an editor, a
script, a sync tool or a crash would, and checks what the next build serves: the right bytes,
exit 0, one warning, nothing lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from conftest import ran, statuses

# Stamps are trusted only for entries older than the racy window (2 s): with 0 they are recorded
# at once, so the stamp path (one lstat per entry, no hashing) is what these builds exercise.
STAMPS = {"MBUILD_RACY_WINDOW_MS": "0"}
NO_SANDBOX = {"MBUILD_NO_SANDBOX": "1"}


def pipeline(ws):
    ws.write("src.txt", "source-bytes\n")
    ws.build_file(
        "p",
        """
genrule(name="a", outs=["a.txt", "sub/deep.txt"], cmd="echo good-bytes > $(OUT_DIR)/a.txt; echo deep > $(OUT_DIR)/sub/deep.txt")
genrule(name="b", srcs=[":a"], outs=["b.txt"], cmd="cat $(SRCS) > $@")
genrule(name="c", srcs=["//:src.txt"], outs=["c.txt"], cmd="cat $(SRCS) > $@")
""",
    )
    ws.write("BUILD.py", "")


def build(ws, *labels, env=None, ok=True):
    events = ws.root / ".events-integrity.jsonl"
    proc = ws.mbuild("build", "--events", str(events), *labels, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ws.last = proc
    import json

    return [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []


def cached_file(ws, label_dir: str, name: str) -> Path:
    """The file in the tree cache behind a materialised output (same inode as its CAS blob)."""
    return Path(os.path.realpath(ws.root / "mbuild-out" / label_dir / name))


def write_through(path: Path, data: bytes) -> None:
    """What an editor or a script does to a file it can reach: make it writable, rewrite it."""
    os.chmod(path, 0o644)
    path.write_bytes(data)


# --- 1. bytes changed in place are never served --------------------------------------------------


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    write_through(path, bytes(data))


def _truncate(path: Path) -> None:
    os.chmod(path, 0o644)
    os.truncate(path, 3)


def _replace(path: Path) -> None:
    other = path.with_name(".other")
    other.write_bytes(b"EVIL\n")
    os.replace(other, path)


def _extra_entry(path: Path) -> None:
    (path.parent / "planted.txt").write_text("not an output")


def _evil(path: Path) -> None:
    write_through(path, b"EVIL")


DAMAGE = {"evil": _evil, "flip": _flip, "truncate": _truncate, "replace": _replace, "extra-entry": _extra_entry}


@pytest.mark.parametrize("stamps", [True, False], ids=["by-stamp", "racy-hashed"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_bytes_changed_in_the_cache_are_never_served(ws, damage, stamps):
    pipeline(ws)
    env = STAMPS if stamps else None
    build(ws, "//p:a", env=env)
    assert build(ws, "//p:a", env=env) and ws.last.stderr.count("cache hits") == 1  # stamps in place
    DAMAGE[damage](cached_file(ws, "p/a", "a.txt"))
    events = build(ws, "//p:a", env=env)
    # Written in place, the bytes of the file's inode (shared with its blob) are gone: it reruns.
    # Replaced or added beside it, the blob is intact: the tree is restored from the store.
    assert statuses(events) == {"//p:a": "ran" if damage in ("evil", "flip", "truncate") else "cache_hit"}, ws.last.stderr
    assert "warning: " in ws.last.stderr and "changed on disk" in ws.last.stderr
    assert (ws.root / "mbuild-out/p/a/a.txt").read_bytes() == b"good-bytes\n"
    assert not (ws.root / "mbuild-out/p/a/planted.txt").exists()
    assert statuses(build(ws, "//p:a", env=env)) == {"//p:a": "cache_hit"}


def test_a_damaged_dependency_is_rebuilt_before_a_dependent_runs(ws):
    pipeline(ws)
    build(ws, "//p:a", env=STAMPS)
    _evil(cached_file(ws, "p/a", "sub/deep.txt"))
    events = build(ws, "//p:b", env=STAMPS)
    assert {"//p:a", "//p:b"} <= ran(events)
    assert (ws.root / "mbuild-out/p/b/b.txt").read_text() == "good-bytes\ndeep\n"


def test_a_mode_change_alone_is_not_damage(ws):
    pipeline(ws)
    build(ws, "//p:a", env=STAMPS)
    os.chmod(cached_file(ws, "p/a", "a.txt"), 0o644)  # the stamp changes, the bytes do not
    assert statuses(build(ws, "//p:a", env=STAMPS)) == {"//p:a": "cache_hit"}


# --- 2. an action cannot poison its inputs -------------------------------------------------------


EVIL_RULES = """
import os
from mbuild import attr, rule

@rule(attrs={"dep": attr.label()}, outputs=["out.txt"])
def overwrite_input(ctx):
    target = ctx.inputs.dep / "a.txt" if ctx.inputs.dep.is_dir() else ctx.inputs.dep
    os.chmod(target, 0o644)          # root ignores read-only modes; only a read-only mount stops it
    with open(target, "w") as f:
        f.write("POISON")
    (ctx.out / "out.txt").write_text("done")
"""


def _sandbox_available() -> bool:
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0 if shutil.which("unshare") else False


@pytest.mark.parametrize("sandbox", [True, False], ids=["read-only-mounts", "checked-only"])
@pytest.mark.parametrize("how", ["genrule", "python"])
def test_an_action_that_writes_its_input_fails_and_the_input_stays_right(ws, how, sandbox):
    if sandbox and not _sandbox_available():
        pytest.skip("no private mount namespaces on this machine")
    pipeline(ws)
    ws.write(f"{ws.rules}_evil.py", EVIL_RULES)
    extra = f"from {ws.rules}_evil import overwrite_input\n"
    if how == "genrule":
        extra += 'genrule(name="evil", srcs=[":a"], outs=["x"], cmd="chmod u+w $(SRCS); for f in $(SRCS); do echo POISON > $f; done; echo > $@")\n'
    else:
        extra += 'overwrite_input(name="evil", dep=":a")\n'
    ws.write("p/BUILD.py", (ws.root / "p/BUILD.py").read_text() + extra)
    env = {**STAMPS, **({} if sandbox else NO_SANDBOX)}
    build(ws, "//p:a", env=env)
    proc = ws.mbuild("build", "//p:evil", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr.split("FAILED")[0]
    if sandbox:
        assert "Read-only file system" in proc.stderr and "a.txt" in proc.stderr
    else:
        assert "input //p:a changed while the action ran (a.txt)" in proc.stderr
    events = build(ws, "//p:b", env=env)
    assert (ws.root / "mbuild-out/p/b/b.txt").read_text() == "good-bytes\ndeep\n"
    assert sandbox or "//p:a" in ran(events)  # its damaged copy was dropped and rebuilt
    assert (ws.root / "mbuild-out/p/a/a.txt").read_text() == "good-bytes\n"


@pytest.mark.parametrize("sandbox", [True, False], ids=["read-only-mounts", "checked-only"])
def test_an_action_that_writes_a_workspace_source_fails_naming_it(ws, sandbox):
    if sandbox and not _sandbox_available():
        pytest.skip("no private mount namespaces on this machine")
    pipeline(ws)
    ws.write("p/BUILD.py", (ws.root / "p/BUILD.py").read_text() + 'genrule(name="evil", srcs=["//:src.txt"], outs=["x"], cmd="echo X >> $(SRCS); echo > $@")\n')
    proc = ws.mbuild("build", "//p:evil", env=None if sandbox else NO_SANDBOX)
    assert proc.returncode == 1
    if sandbox:
        assert "src.txt: Read-only file system" in proc.stderr
        assert (ws.root / "src.txt").read_text() == "source-bytes\n"
    else:
        assert "the workspace file src.txt changed while the action ran" in proc.stderr


def test_inputs_stay_read_only_for_every_action_a_worker_runs(ws):
    """A worker mounts the tree cache and source files read-only once and keeps them so: an action
    late in a worker's life, after others read the same source and placed and adopted trees, still
    cannot write either kind of input, and the builds around it are right."""
    if not _sandbox_available():
        pytest.skip("no private mount namespaces on this machine")
    pipeline(ws)
    readers = "".join(f'genrule(name="r{i}", srcs=["//:src.txt", ":a"], outs=["r{i}.txt"], cmd="cat $(SRCS) > $@")\n' for i in range(6))
    late = 'genrule(name="late", srcs=[":r5", "//:src.txt"], outs=["x"], cmd="echo X >> $(location //:src.txt) || exit 3; echo > $@")\n'
    tree = 'genrule(name="late_tree", srcs=[":r5", ":a"], outs=["y"], cmd="for f in $(locations :a); do echo POISON > $f || exit 4; done; echo > $@")\n'
    ws.write("p/BUILD.py", (ws.root / "p/BUILD.py").read_text() + readers + late + tree)
    proc = ws.mbuild("build", "-j1", "-k", "//p:late", "//p:late_tree")
    assert proc.returncode == 1
    assert "src.txt: Read-only file system" in proc.stderr and "a.txt: Read-only file system" in proc.stderr
    assert (ws.root / "src.txt").read_text() == "source-bytes\n"
    build(ws, "//p:r0", "//p:b")
    assert (ws.root / "mbuild-out/p/r0/r0.txt").read_text() == "source-bytes\ngood-bytes\ndeep\n"
    assert (ws.root / "mbuild-out/p/b/b.txt").read_text() == "good-bytes\ndeep\n"


# --- 3. a record under another key is a miss ---------------------------------------------------


def _keys(events) -> dict[str, str]:
    return {e["label"]: e["key"] for e in events if "label" in e}


def test_swapped_local_records_are_misses_with_a_warning(ws):
    pipeline(ws)
    keys = _keys(build(ws, "//p:a", "//p:c"))
    env = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=16, map_size=1 << 30)
    ac = env.open_db(b"ac")
    with env.begin(db=ac, write=True) as txn:
        ka, kc = keys["//p:a"].encode(), keys["//p:c"].encode()
        ra, rc = txn.get(ka), txn.get(kc)
        txn.put(ka, rc)
        txn.put(kc, ra)
    env.close()
    shutil.rmtree(ws.root / "mbuild-out")
    events = build(ws, "//p:a", "//p:c")
    assert ran(events) == {"//p:a", "//p:c"}
    assert ws.last.stderr.count("answers another action") == 2
    assert (ws.root / "mbuild-out/p/a/a.txt").read_text() == "good-bytes\n"
    assert (ws.root / "mbuild-out/p/c/c.txt").read_text() == "source-bytes\n"


def test_a_remote_record_copied_over_another_is_a_miss(ws, tmp_path):
    pipeline(ws)
    bucket = tmp_path / "bucket"
    ws.write("WORKSPACE.toml", f'[workspace]\nname = "test"\n[remote]\nurl = "file://{bucket}"\n')
    keys = _keys(build(ws, "//p:a", "//p:c"))
    shutil.copyfile(bucket / "ac" / keys["//p:a"], bucket / "ac" / keys["//p:c"])  # a bad `gsutil cp`
    clone = tmp_path / "clone"
    shutil.copytree(ws.root, clone, ignore=shutil.ignore_patterns(".mbuild", "mbuild-out", ".events-*"))
    proc = subprocess.run([sys.executable, "-m", "mbuild.front.cli", "build", "//p:a", "//p:c"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "holds the record of another action" in proc.stderr
    assert (clone / "mbuild-out/p/a/a.txt").read_text() == "good-bytes\n"
    assert (clone / "mbuild-out/p/c/c.txt").read_text() == "source-bytes\n"


# --- 4. a damaged database heals itself ------------------------------------------------------------


def _data_mdb(ws) -> Path:
    return ws.root / ".mbuild/cache/db/data.mdb"


def _truncate_half(ws):
    os.truncate(_data_mdb(ws), os.path.getsize(_data_mdb(ws)) // 2)


def _random_middle(ws):
    path = _data_mdb(ws)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(os.urandom(min(65536, size // 2)))


def _db_is_a_file(ws):
    db = ws.root / ".mbuild/cache/db"
    shutil.rmtree(db)
    db.write_text("not a database")


@pytest.mark.parametrize("damage", [_truncate_half, _random_middle, _db_is_a_file], ids=["truncated", "random-64k", "db-is-a-file"])
def test_a_damaged_database_is_moved_aside_and_rebuilt(ws, damage):
    pipeline(ws)
    ws.build_file("q", "\n".join(f'genrule(name="t{j}", outs=["o"], cmd="echo {j} > $@")' for j in range(40)))  # some pages
    build(ws, "//p:b", "//q:all")
    damage(ws)
    build(ws, "//p:b", "//q:all")
    warnings = [line for line in ws.last.stderr.splitlines() if line.startswith("warning: local cache database")]
    assert len(warnings) == 1 and "moved it to" in warnings[0], ws.last.stderr
    assert (ws.root / "mbuild-out/p/b/b.txt").read_text() == "good-bytes\ndeep\n"
    assert any(p.name.startswith("db.damaged-") for p in (ws.root / ".mbuild/cache").iterdir())
    assert statuses(build(ws, "//p:b")) == {"//p:a": "cache_hit", "//p:b": "cache_hit"}


def _stale_reader(db: Path) -> None:
    """An mbuild process that dies (SIGKILL) with the database open, as one killed by a damaged page would."""
    code = (
        "import sys; from pathlib import Path; from mbuild.stores.localdb import LocalDB; db = LocalDB(Path(sys.argv[1])); "
        "db.get_noop('x'); print('ready', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_processes_that_exit_cleanly_leave_no_mark_and_cost_no_read_through(ws):
    """Builders and their workers remove their marks in db/holders/ on the way out, so only a
    process that died with the database open makes the next one read it through."""
    pipeline(ws)
    build(ws, "//p:b")
    build(ws, "//p:c")
    assert "reading it through" not in ws.last.stderr
    assert list((ws.root / ".mbuild/cache/db/holders").iterdir()) == []


@pytest.mark.parametrize("why", ["a reader died", "the machine restarted"])
def test_the_database_is_read_through_in_a_child_when_damage_is_likely(ws, why):
    """LMDB can kill its reader on damage it does not check; the child takes that risk, not the build."""
    pipeline(ws)
    build(ws, "//p:b")
    db = ws.root / ".mbuild/cache/db"
    # Damage a page certainly in use, which opening the database does not read: the action cache's
    # root (a page chosen by file offset may be free, or be one that opening reads, and then the
    # damage would be caught, or missed, without the read-through this test is about).
    (page, *_) = damage_ops.live_pages(db / "data.mdb", b"ac")
    with open(db / "data.mdb", "r+b") as f:
        f.seek(page * 4096)
        f.write(b"\xff" * 4096)
    if why == "a reader died":
        _stale_reader(db)
    else:
        (db / "boot_id").write_text("00000000-0000-0000-0000-000000000000\n")
    build(ws, "//p:b")
    assert "reading it through" in ws.last.stderr, ws.last.stderr
    assert (ws.root / "mbuild-out/p/b/b.txt").read_text() == "good-bytes\ndeep\n"


# --- 5. a read-only cache serves hits ------------------------------------------------------------


def test_a_read_only_cache_serves_hits_and_says_it_cannot_record(ws):
    if not _sandbox_available():
        pytest.skip("cannot make a read-only mount here (no private mount namespaces)")
    pipeline(ws)
    build(ws, "//p:b")
    cache = ws.root / ".mbuild/cache"
    ws.write("p/BUILD.py", (ws.root / "p/BUILD.py").read_text() + 'genrule(name="new", outs=["n"], cmd="echo > $@")\n')
    script = (
        f'mount --bind {cache} {cache} && mount -o remount,bind,ro {cache} && '
        f'{sys.executable} -m mbuild.front.cli build //p:b; echo "rc=$?"; {sys.executable} -m mbuild.front.cli build //p:new; echo "rc=$?"'
    )
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ws.root, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr
    first, second = proc.stdout.split("rc=")[1:3]
    assert first.startswith("0") and second.startswith("1"), proc.stdout + proc.stderr
    assert "is read-only: cached results are served, nothing new is recorded" in proc.stderr
    assert "cannot run it: the local cache .mbuild/cache is read-only" in proc.stderr
    assert (ws.root / "mbuild-out/p/b/b.txt").read_text() == "good-bytes\ndeep\n"


# --- property: random damage never changes what a build produces -----------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import damage as damage_ops  # noqa: E402

GRAPH_RULES = """
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "n": attr.int(), "size": attr.int(default=10)}, outputs=["v.txt", "data/blob.bin"])
def node(ctx):
    total = ctx.attr.n + sum(int((d / "v.txt").read_text()) for d in ctx.inputs.deps)
    (ctx.out / "v.txt").write_text(str(total))
    (ctx.out / "data").mkdir()
    (ctx.out / "data" / "blob.bin").write_bytes(bytes([ctx.attr.n % 251]) * ctx.attr.size)
    return {"total": total}
"""


def _graph_workspace(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "damage"\n')
    (root / "graphrules.py").write_text(GRAPH_RULES)
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("a source file\n")
    lines = ["from graphrules import node", "from mbuild.rules import genrule"]
    for i in range(8):
        deps = [f":n{j}" for j in (i - 1, i // 2) if 0 <= j < i]
        lines.append(f'node(name="n{i}", n={i}, size={[10, 5000, 70000][i % 3]}, deps={sorted(set(deps))!r})')
    lines.append('genrule(name="g", srcs=[":n7", "//src:input.txt"], outs=["g.txt"], cmd="cat $(SRCS) | sha256sum > $@")')
    (root / "BUILD.py").write_text("\n".join(lines) + "\n")
    (root / "src" / "BUILD.py").write_text("")


def _outputs(root: Path) -> dict[str, bytes]:
    out = root / "mbuild-out"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".gitignore" not in p.name}


def _cli(root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbuild.front.cli", "build", "//..."], cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A built workspace (its cache full, stamps recorded) and the bytes a clean build produces."""
    root = tmp_path_factory.mktemp("golden") / "ws"
    _graph_workspace(root)
    for _ in range(2):
        proc = _cli(root, STAMPS)
        assert proc.returncode == 0, proc.stderr
    return root, _outputs(root)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(damage_ops.SAFE_KINDS), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_random_damage_to_a_real_cache_never_changes_the_outputs(golden, tmp_path_factory, kinds, seed):
    """Flip, truncate, rewrite, replace, delete, plant, swap or drop records, damage the database: the
    next build exits 0 and its outputs are byte-identical to a clean build's; so is the one after."""
    import random

    root, reference = golden
    work = tmp_path_factory.mktemp("damaged") / "ws"
    shutil.copytree(root, work, symlinks=True)
    (work / ".mbuild/cache/db/lock.mdb").unlink(missing_ok=True)  # the golden builders are gone
    rng = random.Random(seed)
    done = [d for kind in kinds if (d := damage_ops.apply(work / ".mbuild/cache", kind, rng)) is not None]
    for attempt in range(2):
        proc = _cli(work, STAMPS)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"{[str(d) for d in done]}\n{proc.stderr}"
        assert _outputs(work) == reference, f"wrong bytes served after {[str(d) for d in done]} (build {attempt + 1})"


@pytest.mark.parametrize("how", ["unchecked", "bad-checksum", "truncated"])
def test_a_tampered_compiled_build_file_is_never_run(ws, how):
    """Compiled BUILD files in the cache (buildc/) are code: one that its own digest does not vouch
    for is compiled again from the BUILD file, never executed."""
    import marshal

    import xxhash

    ws.build_file("p", 'genrule(name="good", outs=["g.txt"], cmd="echo good > $@")\n')
    ws.mbuild("query", "//p:all", check=True)
    [compiled] = (ws.root / ".mbuild/cache/buildc").glob("*.code")
    evil = marshal.dumps(compile('genrule(name="evil", outs=["e.txt"], cmd="echo evil > $@")\n', "BUILD.py", "exec"))
    if how == "unchecked":  # the format before compiled files carried their digest
        compiled.write_bytes(evil)
    elif how == "bad-checksum":
        compiled.write_bytes(xxhash.xxh3_128_hexdigest(b"something else").encode() + evil)
    else:
        compiled.write_bytes(compiled.read_bytes()[:40])
    out = ws.mbuild("query", "//p:all", check=True).stdout.split()
    assert out == ["//p:good"]
