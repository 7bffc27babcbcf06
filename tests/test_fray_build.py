"""Remote execution end to end through the CLI: remote-tagged actions as fray jobs on a real local
Iris cluster (`--fray iris-local`) and on fray's LocalClient (the default)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("iris")

RULES = '''
import os, time
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "n": attr.int(), "runs": attr.string(), "marker": attr.string(default=""),
             "seconds": attr.float(default=0.0)}, outputs=["out.txt"], resources={"cpu": 1, "ram": "1g", "disk": "1g"})
def heavy(ctx):
    """Remote-tagged: it asks for resources."""
    with open(ctx.attr.runs, "a") as f:
        f.write(f"{ctx.attr.n} {os.getpid()}\\n")
    if ctx.attr.marker:
        open(ctx.attr.marker, "w").write(str(os.getpid()))
    time.sleep(ctx.attr.seconds)
    parts = [str(ctx.attr.n)] + [(d / "out.txt").read_text() for d in ctx.inputs.deps]
    (ctx.out / "out.txt").write_text("+".join(parts))

@rule(attrs={"deps": attr.label_list(default=[])}, outputs=["out.txt"])
def light(ctx):
    parts = ["L"] + [(d / "out.txt").read_text() for d in ctx.inputs.deps]
    (ctx.out / "out.txt").write_text("+".join(parts))

@rule(attrs={}, outputs=["x"], resources={"cpu": 1, "ram": "1g", "disk": "1g"})
def heavy_fail(ctx):
    raise ValueError("remote kaboom in the job")
'''


def setup(ws, marker: str = "", seconds: float = 0.0) -> Path:
    runs = ws.root / "runs.txt"
    ws.write(f"{ws.rules}_heavy.py", RULES)
    ws.build_file(
        "p",
        f"from {ws.rules}_heavy import heavy, light, heavy_fail\n"
        f'heavy(name="h1", n=1, runs={str(runs)!r})\n'
        f'heavy(name="h2", n=2, runs={str(runs)!r}, deps=[":h1"], marker={marker!r}, seconds={seconds})\n'
        f'light(name="top", deps=[":h2"])\n'
        f'heavy_fail(name="bad")\n',
    )
    return runs


def build(ws, *args: str, ok: bool = True) -> tuple[list[dict], subprocess.CompletedProcess, int]:
    events = ws.root / f"ev-{time.monotonic_ns()}.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "--events", str(events), *args], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if ok:
        assert proc.returncode == 0, err[-4000:]
    return [json.loads(line) for line in events.read_text().splitlines()], done, proc.pid


def pids_of(ws) -> dict[str, int]:
    import lmdb

    env = lmdb.open(str(ws.root / ".mbuild/cache/db"), max_dbs=8, map_size=1 << 30)
    with env.begin(db=env.open_db(b"ac")) as txn:
        metas = [json.loads(bytes(v)[33:])["meta"] for _, v in txn.cursor()]
    env.close()
    return {m["label"]: m["pid"] for m in metas}


def test_remote_tagged_actions_run_as_iris_jobs_in_other_processes(ws):
    runs = setup(ws)
    events, proc, driver = build(ws, "--fray", "iris-local", "//p:top")
    sources = {e["label"]: e["source"] for e in events[:-1]}
    assert sources["//p:h1"].startswith("fray:iris-local/") and sources["//p:h2"].startswith("fray:iris-local/")
    assert sources["//p:top"] == "local"
    pids = pids_of(ws)
    assert driver not in (pids["//p:h1"], pids["//p:h2"])
    assert (ws.root / "mbuild-out/p/top/out.txt").read_text() == "L+2+1"
    # The second build is a no-op: every action a cache hit, no job started.
    events, proc, _ = build(ws, "--fray", "iris-local", "//p:top")
    assert {e["status"] for e in events[:-1]} == {"cache_hit"}
    assert not any(e["source"].startswith("fray:") for e in events[:-1])
    assert runs.read_text().count("\n") == 2


def test_a_failing_remote_action_reports_its_traceback(ws):
    setup(ws)
    events, proc, _ = build(ws, "--fray", "iris-local", "//p:bad", ok=False)
    assert proc.returncode == 1
    assert "ValueError: remote kaboom in the job" in proc.stderr
    assert 'raise ValueError("remote kaboom in the job")' in proc.stderr  # the traceback, not just the message
    bad = next(e for e in events if e["label"] == "//p:bad")
    assert bad["status"] == "failed" and Path(bad["log"]).exists()


def test_default_backend_runs_remote_tagged_actions_through_fray_local_client(ws):
    setup(ws)
    events, _, _ = build(ws, "//p:top")
    sources = {e["label"]: e["source"] for e in events[:-1]}
    assert sources["//p:h1"].startswith("fray:local/") and sources["//p:top"] == "local"
    assert (ws.root / "mbuild-out/p/top/out.txt").read_text() == "L+2+1"


def test_killing_the_driver_mid_build_then_rebuilding_reuses_the_work(ws):
    """SIGKILL the driver while a remote job runs: the rebuild reuses h1 (done before the kill) and
    runs h2 again exactly once (its iris-local task died with the driver); nothing runs twice at once."""
    marker = ws.root / "h2-started"
    runs = setup(ws, marker=str(marker), seconds=2.0)
    proc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "--fray", "iris-local", "//p:top"], cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)  # polling for the remote job to start, with a deadline
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    events, _, _ = build(ws, "--fray", "iris-local", "//p:top")
    st = {e["label"]: e["status"] for e in events[:-1]}
    assert st["//p:h1"] == "cache_hit" and st["//p:h2"] == "ran"
    lines = runs.read_text().splitlines()
    assert [line.split()[0] for line in lines].count("1") == 1  # h1 was reused, not rerun
    assert [line.split()[0] for line in lines].count("2") == 2  # the killed attempt, and one rerun
    assert (ws.root / "mbuild-out/p/top/out.txt").read_text() == "L+2+1"


def test_ctrl_c_during_an_in_process_fray_action_exits_promptly(ws):
    """fray's LocalClient runs actions on threads of the build: they cannot be stopped, so Ctrl-C
    must not wait for them."""
    marker = ws.root / "started"
    setup(ws, marker=str(marker), seconds=60.0)
    proc = subprocess.Popen([sys.executable, "-m", "mbuild.front.cli", "build", "//p:h2"], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)  # polling for the in-process job to start, with a deadline
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - sent < 10
