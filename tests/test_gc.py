"""`mbuild gc`: least recently used first, dry runs, ages, keeping the last builds' results, and
collecting to a tiny size while builders loop beside it (no failed build, no wrong bytes)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from conftest import ran

GRAPH = """
step(name="a", text="a")
step(name="b", text="b", deps=[":a"])
step(name="c", text="c", deps=[":b"])
step(name="d", text="d", deps=[":a"])
step(name="top", text="top", deps=[":c", ":d"])
step(name="other", text="other")
"""
EXPECTED = {"a": "a", "b": "b+a", "c": "c+b+a", "d": "d+a", "top": "top+c+b+a+d+a"}


FRESH = {"MBUILD_RACY_WINDOW_MS": "0"}  # stamp just-written files, so a repeated build is a no-op answer


def built(ws, *labels: str) -> set[str]:
    """Build (checked) and return the labels whose actions ran."""
    events = ws.root.parent / f"events-{os.urandom(4).hex()}.jsonl"  # outside: a new file in the root would change a listed directory
    ws.mbuild("build", "--events", str(events), *labels, env=FRESH, check=True)
    return ran([json.loads(line) for line in events.read_text().splitlines()])


def cache_files(root: Path) -> list[str]:
    cache = root / ".mbuild" / "cache"
    return sorted(str(p.relative_to(cache)) for sub in ("cas", "trees", "logs") for p in (cache / sub).rglob("*") if p.is_file())


def output(root: Path, name: str) -> str | None:
    try:
        return (root / "mbuild-out" / "p" / name / "out.txt").read_text()
    except OSError:
        return None  # collected after its build ended: gone, never wrong


def test_dry_run_says_what_and_deletes_nothing(ws):
    ws.build_file("p", GRAPH)
    ws.build("//p:top")
    before = cache_files(ws.root)
    proc = ws.mbuild("gc", "--max-size", "1", "--dry-run", check=True)
    assert "would collect 5 results" in proc.stdout and "freeing" in proc.stdout
    assert "//p:top" in proc.stdout
    assert cache_files(ws.root) == before
    assert ran(ws.build("//p:top")) == set()  # still all cached


def test_max_age_and_keep_builds(ws):
    ws.build_file("p", GRAPH)
    built(ws, "//p:other")
    built(ws, "//p:top")
    assert built(ws, "//p:top") == set()  # answered by its no-op record: the last build, recorded without a write per action
    assert os.listdir(ws.root / ".mbuild" / "cache" / "uses")
    proc = ws.mbuild("gc", "--max-age", "1h", check=True)
    assert "collected 0 results" in proc.stdout  # everything was used within the hour
    proc = ws.mbuild("gc", "--max-age", "0s", "--keep-builds", "1", check=True)
    assert "collected 1 results" in proc.stdout  # //p:other: not used by the last build
    assert built(ws, "//p:top") == set()
    assert output(ws.root, "top") == EXPECTED["top"]
    assert built(ws, "//p:other") == {"//p:other"}
    proc = ws.mbuild("gc", "--max-age", "0s", check=True)
    assert "collected 6 results" in proc.stdout
    assert built(ws, "//p:top") == {f"//p:{n}" for n in EXPECTED}
    assert output(ws.root, "top") == EXPECTED["top"]


def test_bad_size_is_one_line(ws):
    proc = ws.mbuild("gc", "--max-size", "lots")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --max-size 'lots': expected a size such as 20G, 500M or 4096 (bytes)"]


def test_gc_to_a_tiny_size_beside_looping_builders(ws):
    """Two builders loop over a small graph; gc (in this process, as fast as it can, one run per
    finished build) collects everything it may to 1 byte beside them."""
    from mbuild.stores.cas import LocalCAS
    from mbuild.stores.gc.collect import collect
    from mbuild.stores.gc.plan import Policy
    from mbuild.stores.localdb import LocalDB

    ws.build_file("p", GRAPH)
    ws.build("//p:top")  # the cache exists before gc opens it
    rounds, failures, wrong, reruns, collected = 8, [], [], [], []
    finished = threading.Semaphore(0)
    done = threading.Event()

    def builder(n: int) -> None:
        for i in range(rounds):
            events = ws.root / f".ev-{n}-{i}.jsonl"
            proc = ws.mbuild("build", "--events", str(events), "//p:top", "//p:c")
            finished.release()
            if proc.returncode != 0:
                failures.append(proc.stdout + proc.stderr)
                continue
            reruns.append(sum(1 for line in events.read_text().splitlines() if json.loads(line).get("status") == "ran"))
            for name in ("top", "c"):
                got = output(ws.root, name)
                if got is not None and got != EXPECTED[name]:
                    wrong.append((name, got))

    cache = ws.root / ".mbuild" / "cache"
    cas, db = LocalCAS(cache), LocalDB(cache / "db")

    def collector() -> None:
        while True:
            finished.acquire()  # a turn per finished build: the other builder is mid-build meanwhile
            if done.is_set():
                return
            collected.append(collect(db, cas, Policy(max_size=1), batch=2).results)

    builders = [threading.Thread(target=builder, args=(n,)) for n in range(2)]
    gc = threading.Thread(target=collector)
    for t in (*builders, gc):
        t.start()
    for t in builders:
        t.join()
    done.set()
    finished.release()
    gc.join()
    db.close()
    print(f"builds={2 * rounds} failed={len(failures)} wrong={len(wrong)} ran={sum(reruns)} gc_runs={len(collected)} collected={sum(collected)}")
    assert failures == [] and wrong == []
    assert sum(collected) > 0 and sum(reruns) > len(EXPECTED)  # gc really took results from under the loop
    ws.mbuild("build", "//p:top", check=True)
    assert output(ws.root, "top") == EXPECTED["top"]


def test_no_op_build_writes_nothing_per_action(ws):
    """The no-op path records its use by one file's mtime: no database write at all."""
    from mbuild.stores.localdb import LocalDB

    ws.build_file("p", GRAPH)
    built(ws, "//p:top")
    built(ws, "//p:top")
    cache = ws.root / ".mbuild" / "cache"
    (request,) = os.listdir(cache / "uses")
    before_mtime = os.stat(cache / "uses" / request).st_mtime_ns
    db = LocalDB(cache / "db")
    before = db.last_txn()
    assert built(ws, "//p:top") == set()
    assert db.last_txn() == before
    assert os.stat(cache / "uses" / request).st_mtime_ns > before_mtime
    db.close()


WAIT_RULES = '''
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "flag": attr.string()}, outputs=["out.txt"])
def waits(ctx):
    text = "+".join((d / "out.txt").read_text() for d in ctx.inputs.deps)
    with open(ctx.attr.flag + ".started", "w") as f:  # a FIFO: opening blocks until the test reads
        f.write("started")
    with open(ctx.attr.flag + ".go") as f:  # a FIFO: the test lets it go once gc is queued on the lock
        f.read()
    text += "+" + "+".join((d / "out.txt").read_text() for d in ctx.inputs.deps)  # its inputs, still there
    (ctx.out / "out.txt").write_text(text)
'''


def _waiting_on_flock(pid: int) -> bool:
    """Whether `pid` is queued for a flock (a `->` line of /proc/locks)."""
    with open("/proc/locks") as f:
        return any(line.split()[1] == "->" and line.split()[5] == str(pid) for line in f if len(line.split()) > 5)


def test_gc_waits_for_a_running_build(ws):
    """gc run while an action is mid-build queues on the cache lock; the action's inputs stay."""
    import subprocess
    import sys
    import time

    name = f"{ws.rules}_wait"
    ws.write(f"{name}.py", WAIT_RULES)
    flag = ws.root / "flag"
    ws.build_file("p", GRAPH + f'from {name} import waits\nwaits(name="w", deps=[":top", ":d"], flag={str(flag)!r})\n')
    ws.build("//p:top")
    os.mkfifo(flag.with_suffix(".started"))
    os.mkfifo(flag.with_suffix(".go"))
    env = {**os.environ}
    build = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "//p:w"], cwd=ws.root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(flag.with_suffix(".started")) as f:  # blocks until the action is running
        assert f.read() == "started"
    deadline = time.monotonic() + 60
    gc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "gc", "--max-size", "1"], cwd=ws.root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not _waiting_on_flock(gc.pid):
        assert gc.poll() is None, gc.stdout.read()  # it must not finish while the build runs
        assert time.monotonic() < deadline
    with open(flag.with_suffix(".go"), "w") as f:
        f.write("go")
    out, _ = build.communicate(timeout=120)
    assert build.returncode == 0, out
    gc_out, _ = gc.communicate(timeout=120)
    assert gc.returncode == 0 and "collected 6 results" in gc_out, gc_out
    assert output(ws.root, "w") is None  # collected after the build ended
    for suffix in (".started", ".go"):  # plain files now: the rebuild below passes straight through
        flag.with_suffix(suffix).unlink()
        flag.with_suffix(suffix).write_text("go")
    assert built(ws, "//p:w") >= {"//p:w", "//p:top"}
    top = EXPECTED["top"]
    assert output(ws.root, "w") == f"{top}+d+a+{top}+d+a"
