"""Many builders, one cache: single-flight leases, fencing, and what users see while they wait."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lmdb

SLOW_RULES = '''
import os, time
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "n": attr.int(), "runs": attr.string(), "seconds": attr.float(default=0.0),
             "marker": attr.string(default="")}, outputs=["out.txt"])
def work(ctx):
    with open(ctx.attr.runs, "a") as f:   # one line per execution, whoever runs it
        f.write(f"{ctx.attr.n} {os.getpid()}\\n")
    if ctx.attr.marker:
        open(ctx.attr.marker, "w").write(str(os.getpid()))
    time.sleep(ctx.attr.seconds)
    parts = [str(ctx.attr.n)] + [(d / "out.txt").read_text() for d in ctx.inputs.deps]
    (ctx.out / "out.txt").write_text(str(sum(int(p) for p in "+".join(parts).split("+"))))
'''


def graph_workspace(ws, n: int, seconds: float, seed: int = 0) -> Path:
    """n actions in a random DAG; each appends to runs.txt every time it executes."""
    rng = random.Random(seed)
    runs = ws.root / "runs.txt"
    ws.write(f"{ws.rules}_slow.py", SLOW_RULES)
    lines = []
    for i in range(n):
        deps = sorted(set(rng.sample(range(i), min(i, 2)))) if i else []
        lines.append(f'work(name="a{i}", n={i}, runs={str(runs)!r}, seconds={seconds}, deps={[f":a{d}" for d in deps]!r})')
    ws.build_file("g", f"from {ws.rules}_slow import work\n" + "\n".join(lines) + "\n")
    return runs


def start_builder(ws, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mbuild.front.cli", "build", *args], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, **(env or {})},
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling a condition, with a deadline


def test_four_builders_one_cache_every_action_runs_once(ws):
    runs = graph_workspace(ws, 50, seconds=0.05)
    builders = [start_builder(ws, "-q", "//g:all") for _ in range(4)]
    outputs = []
    for b in builders:
        out, err = b.communicate(timeout=300)
        assert b.returncode == 0, err
        outputs.append(out)
    counts = Counter(line.split()[0] for line in runs.read_text().splitlines())
    assert len(counts) == 50
    assert max(counts.values()) == 1, {k: v for k, v in counts.items() if v > 1}
    results = {p.name: p.joinpath("out.txt").read_text() for p in (ws.root / "mbuild-out/g").iterdir()}
    assert len(results) == 50


def test_a_waiting_builder_names_the_holder(ws):
    marker = ws.root / "started"
    ws.write(f"{ws.rules}_slow.py", SLOW_RULES)
    runs = ws.root / "runs.txt"
    ws.build_file("g", f'from {ws.rules}_slow import work\nwork(name="long", n=1, runs={str(runs)!r}, seconds=3.0, marker={str(marker)!r})\n')
    first = start_builder(ws, "//g:long")
    wait_for(marker.exists, 60, "the first builder to start the action")
    plan = subprocess.run([sys.executable, "-m", "mbuild.front.cli", "build", "-n", "//g:long"], cwd=ws.root, capture_output=True, text=True)
    assert "running now elsewhere: held by" in plan.stdout and f"pid " in plan.stdout
    second = start_builder(ws, "//g:long")
    out2, err2 = second.communicate(timeout=120)
    first.communicate(timeout=120)
    assert second.returncode == 0, err2
    assert "waiting for //g:long: held by" in err2 and "[//g:long]" in err2
    assert "1 cache hits" in err2
    assert runs.read_text().count("\n") == 1


def test_a_stalled_builder_is_fenced_and_does_not_publish(ws):
    """Freeze the first builder's worker past the lease's TTL: the second takes over and publishes;
    the first, when it wakes, stops without publishing and takes the second's result."""
    ws.write("WORKSPACE.toml", "[lease]\nttl = 2.0\nrenew = 0.4\n")
    marker = ws.root / "started"
    runs = ws.root / "runs.txt"
    ws.write(f"{ws.rules}_slow.py", SLOW_RULES)
    ws.build_file("g", f'from {ws.rules}_slow import work\nwork(name="x", n=7, runs={str(runs)!r}, seconds=1.0, marker={str(marker)!r})\n')
    first = start_builder(ws, "//g:x", "--events", str(ws.root / "first.jsonl"))
    wait_for(marker.exists, 60, "the first builder's action to start")
    frozen = int(marker.read_text())
    marker.unlink()
    os.kill(frozen, signal.SIGSTOP)  # heartbeat and action both stop, as in a long stall
    try:
        second = start_builder(ws, "//g:x", "--events", str(ws.root / "second.jsonl"))
        out2, err2 = second.communicate(timeout=120)
        assert second.returncode == 0, err2
    finally:
        os.kill(frozen, signal.SIGCONT)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert "lost the lease on //g:x" in err1
    # Exactly one publication, by the second builder's worker (never the frozen one).
    env = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=8, map_size=1 << 30)
    with env.begin(db=env.open_db(b"ac")) as txn:
        records = [json.loads(v[33:]) for _, v in txn.cursor()]
    env.close()
    assert len(records) == 1 and records[0]["meta"]["pid"] != frozen
    pids = [int(line.split()[1]) for line in runs.read_text().splitlines()]
    assert frozen in pids and len(pids) == 2  # the stalled run started, the takeover ran; one result


def test_ctrl_c_releases_the_lease(ws):
    marker = ws.root / "started"
    runs = ws.root / "runs.txt"
    ws.write(f"{ws.rules}_slow.py", SLOW_RULES)
    ws.build_file("g", f'from {ws.rules}_slow import work\nwork(name="x", n=1, runs={str(runs)!r}, seconds=60.0, marker={str(marker)!r})\n')
    b = start_builder(ws, "//g:x")
    wait_for(marker.exists, 60, "the action to start")
    b.send_signal(signal.SIGINT)
    b.communicate(timeout=30)
    assert b.returncode == 130
    from mbuild.action.services import Services
    from mbuild.action.spec import ExecConfig

    cache = str(ws.root / ".mbuild/cache")
    env = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=8, map_size=1 << 30)
    with env.begin(db=env.open_db(b"leases")) as txn:
        [key] = [k.decode() for k, _ in txn.cursor()]
    env.close()
    store = Services().leases(ExecConfig(str(ws.root), cache))
    store.pid_check = False  # released by the builder, not merely left behind by a dead process
    assert store.lease(key).last_holder()[1] == "released"


def test_status_names_holder_and_earlier_failure(ws):
    marker = ws.root / "started"
    runs = ws.root / "runs.txt"
    ws.write(f"{ws.rules}_slow.py", SLOW_RULES)
    ws.build_file(
        "g",
        f'from {ws.rules}_slow import work\nwork(name="long", n=1, runs={str(runs)!r}, seconds=3.0, marker={str(marker)!r})\n'
        'fail(name="bad", msg="it broke")\nwork(name="quick", n=2, runs=' + repr(str(runs)) + ')\n',
    )
    ws.mbuild("//g:quick", check=True)
    ws.mbuild("//g:bad")
    first = start_builder(ws, "//g:long")
    wait_for(marker.exists, 60, "the action to start")
    proc = ws.mbuild("status", "//g:all", check=True)
    first.communicate(timeout=120)
    lines = proc.stdout
    assert "//g:quick  cached" in lines
    assert "//g:long   would run: never built" in lines and "running now: held by" in lines and "[//g:long]" in lines
    assert "failed before (" in lines and "RuntimeError: it broke" in lines
