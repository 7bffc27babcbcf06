"""A resumable action run as an Iris job (`--fray iris-local`): its working directory is under the
in-place prefix (not the cache of the host that ran it), and when its task process is SIGKILLed
mid-run, the job submitted again resumes from the steps the killed one left there."""

import json
import os
import signal
import sys

import pytest

from conftest import statuses
from test_resume import progress_lines, start_builder, wait_for

pytest.importorskip("iris")

# One numbered step file per step in work_dir (written to a temp name, then renamed: a step file
# that exists is complete). At step `pause_at` it writes its pid to `paused` and waits for `go`.
STEP_FNS = '''
import os, time
from pathlib import Path

def steps(config, inputs, out_dir, work_dir=None):
    done = sorted(int(p.name[5:]) for p in work_dir.glob("step-*"))
    start = done[-1] + 1 if done else 0
    for i in range(start, config["n"]):
        if i == config["pause_at"] and not os.path.exists(config["go"]):
            Path(config["paused"]).write_text(str(os.getpid()))
            while not os.path.exists(config["go"]):
                time.sleep(0.01)  # waiting for the test to kill this process or let it go
        tmp = work_dir / f".tmp-{i}"
        tmp.write_text(f"{i} {os.getpid()}\\n")
        os.replace(tmp, work_dir / f"step-{i:04d}")
    lines = [(work_dir / f"step-{i:04d}").read_text() for i in range(config["n"])]
    (out_dir / "progress.txt").write_text("".join(lines))
    return {"resumed_at": start}
'''


def test_a_killed_iris_task_is_resumed_by_its_retry_from_the_shared_working_directory(ws, tmp_path):
    shared = tmp_path / "shared"
    ws.write("WORKSPACE.toml", f'[workspace]\nname = "test"\n[outputs]\nprefix = "{shared}"\n[lease]\nttl = 3.0\nrenew = 0.5\n')
    ws.write(f"{ws.rules}_steps.py", STEP_FNS)
    files = {name: ws.root / name for name in ("go", "paused")}
    config = {"n": 8, "pause_at": 4, "go": str(files["go"]), "paused": str(files["paused"])}
    ws.build_file(
        "p",
        f'py_function(name="x", fn="{ws.rules}_steps:steps", config={config!r}, outs=["progress.txt"], resumable=True,\n'
        f'            resources={{"cpu": 1, "ram": "1g", "disk": "1g"}})\n',
    )
    events_path = ws.root / "events.jsonl"
    builder = start_builder(ws, "--fray", "iris-local", "--events", str(events_path), "//p:x")
    try:
        wait_for(files["paused"].exists, 120, "the Iris task to write 4 steps")
        task = int(files["paused"].read_text())
        assert task != builder.pid
        [work] = [p for p in (shared / ".mbuild-work").glob("*/e*-*") if p.is_dir()]
        assert sorted(p.name for p in work.glob("step-*")) == [f"step-{i:04d}" for i in range(4)]
        assert not (ws.root / ".mbuild/cache/resume").exists() or not any((ws.root / ".mbuild/cache/resume").iterdir())
        files["paused"].unlink()
        files["go"].touch()  # the retry goes on past step 4 (the killed task is stopped before it can)
        os.kill(task, signal.SIGKILL)
        out, err = builder.communicate(timeout=120)
    finally:
        if builder.poll() is None:
            os.killpg(builder.pid, signal.SIGKILL)
            builder.communicate(timeout=60)
    assert builder.returncode == 0, err[-4000:]
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert statuses(events)["//p:x"] == "ran"
    [done] = [e for e in events if e.get("label") == "//p:x"]
    assert done["source"].endswith("-retry1")  # Iris does not retry a task killed by a signal: mbuild submits it again
    lines = progress_lines(ws.root / "mbuild-out/p/x/progress.txt")
    assert [i for i, _ in lines] == list(range(8))
    assert {pid for _, pid in lines[:4]} == {task} and task not in {pid for _, pid in lines[4:]}
    key = work.parent.name
    log = (ws.root / f".mbuild/cache/logs/{key}.log").read_text()
    assert f"mbuild: resuming //p:x in {shared}/.mbuild-work/{key}/" in log, log
    assert "(left by lease epoch 1)" in log
    assert not (shared / ".mbuild-work" / key).exists()  # published: the working state is removed


def test_with_a_bucket_prefix_a_fray_job_works_on_its_host_s_disk_and_says_so(ws):
    """No atomic rename in a bucket: the working directory stays under the cache (nothing is written
    to the bucket, which this test does not even serve)."""
    ws.write("WORKSPACE.toml", '[workspace]\nname = "test"\n[outputs]\nprefix = "gs://no-such-bucket/mbuild"\n')
    ws.write(f"{ws.rules}_steps.py", STEP_FNS)
    config = {"n": 3, "pause_at": -1, "go": "", "paused": ""}
    ws.build_file(
        "p",
        f'py_function(name="x", fn="{ws.rules}_steps:steps", config={config!r}, outs=["progress.txt"], resumable=True,\n'
        f'            resources={{"cpu": 1, "ram": "1g", "disk": "1g"}})\n',
    )
    events = ws.build("//p:x")
    assert statuses(events)["//p:x"] == "ran"
    assert [i for i, _ in progress_lines(ws.root / "mbuild-out/p/x/progress.txt")] == [0, 1, 2]
    [done] = [e for e in events if e.get("label") == "//p:x"]
    assert done["source"].startswith("fray:local")
    log = open(done["log"]).read()
    assert "[outputs] prefix gs://no-such-bucket/mbuild is a bucket: this working directory is on this host's disk only" in log
    resume = ws.root / ".mbuild/cache/resume"
    assert resume.is_dir() and not (resume / done["key"]).exists()  # worked there, removed once published
