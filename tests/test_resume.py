"""Resumable actions (a generic py_function): the working directory survives a SIGKILLed builder and
a lost lease, is handed to the next holder by rename, is never served as a result, and is removed
once the result is published. The training pipeline's resume is in test_resume_train.py."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ran, statuses

# Appends one line per step to work_dir/progress.txt, opening it by path each time (a fenced-off
# attempt then cannot reach its successor's directory). At step `pause_at` (n: after the last
# line, before the output) it writes its pid to `paused` and waits for the file `go`.
RESUME_FNS = '''
import os, shutil, time
from pathlib import Path

def append(config, inputs, out_dir, work_dir=None):
    progress = work_dir / "progress.txt"
    done = len(progress.read_text().splitlines()) if progress.exists() else 0
    for i in range(done, config["n"] + 1):
        if i == config["pause_at"] and not os.path.exists(config["go"]):
            Path(config["paused"]).write_text(str(os.getpid()))
            while not os.path.exists(config["go"]):
                time.sleep(0.01)  # waiting for the test to let it go
        if i < config["n"]:
            with open(progress, "a") as f:
                f.write(f"{i} {os.getpid()}\\n")
    shutil.copy(progress, out_dir / "progress.txt")
    return {"resumed_at": done}
'''


def workspace(ws, pause_at: int, n: int = 10, lease: str = "") -> dict:
    """A py_function //p:x that is resumable; returns the files the test and the action share."""
    files = {name: ws.root / name for name in ("go", "paused")}
    ws.write(f"{ws.rules}_resume.py", RESUME_FNS)
    if lease:
        ws.write("WORKSPACE.toml", lease)
    config = {"n": n, "pause_at": pause_at, "go": str(files["go"]), "paused": str(files["paused"])}
    ws.build_file("p", f'py_function(name="x", fn="{ws.rules}_resume:append", config={config!r}, outs=["progress.txt"], resumable=True)\n')
    return files


def start_builder(ws, *args: str) -> subprocess.Popen:
    """A builder in its own process group (its workers die with it: PR_SET_PDEATHSIG)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mbuild.front.cli", "build", *args], cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling a condition, with a deadline


def resume_root(ws) -> Path:
    return ws.root / ".mbuild/cache/resume"


def attempt_dirs(ws) -> list[Path]:
    return sorted(p for p in resume_root(ws).glob("*/e*-*") if p.is_dir())


def kill_group(builder: subprocess.Popen) -> None:
    os.killpg(builder.pid, signal.SIGKILL)
    builder.communicate(timeout=60)


def gone(pid: int) -> bool:
    """The process has exited (or is a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def progress_lines(path: Path) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (line.split() for line in path.read_text().splitlines())]


def test_a_killed_builder_s_working_directory_is_resumed_then_removed(ws):
    files = workspace(ws, pause_at=5)
    first = start_builder(ws, "//p:x")
    wait_for(files["paused"].exists, 120, "the first attempt to write 5 steps")
    first_pid = int(files["paused"].read_text())
    kill_group(first)
    [left] = attempt_dirs(ws)
    assert len((left / "progress.txt").read_text().splitlines()) == 5
    files["go"].touch()
    events = ws.build("//p:x")
    assert ran(events) == {"//p:x"}
    [done] = [e for e in events if e.get("label") == "//p:x"]
    lines = progress_lines(ws.root / "mbuild-out/p/x/progress.txt")
    assert [i for i, _ in lines] == list(range(10))
    assert {pid for _, pid in lines[:5]} == {first_pid} and first_pid not in {pid for _, pid in lines[5:]}
    key = left.parent.name
    log = (ws.root / f".mbuild/cache/logs/{key}.log").read_text()
    assert "mbuild: resuming //p:x in " in log and "(left by lease epoch 1)" in log
    assert not (resume_root(ws) / key).exists()  # published: the working state is removed
    assert done["status"] == "ran"


def test_a_leftover_working_directory_is_never_served_as_a_result(ws):
    files = workspace(ws, pause_at=10)  # every step written; killed before its output exists
    first = start_builder(ws, "//p:x")
    wait_for(files["paused"].exists, 120, "the first attempt to finish its steps")
    kill_group(first)
    [left] = attempt_dirs(ws)
    (left / "progress.txt.done").write_text("looks finished")  # whatever is in there, it is not a result
    plan = ws.mbuild("build", "-n", "//p:x", check=True)
    assert "//p:x" in plan.stdout and "would run" in plan.stdout, plan.stdout
    status = ws.mbuild("status", "//p:x", check=True)
    assert "cached" not in status.stdout and "would run" in status.stdout, status.stdout
    assert not (ws.root / "mbuild-out/p/x").exists()
    files["go"].touch()
    events = ws.build("//p:x")
    assert statuses(events)["//p:x"] == "ran"
    assert [i for i, _ in progress_lines(ws.root / "mbuild-out/p/x/progress.txt")] == list(range(10))
    assert not (ws.root / "mbuild-out/p/x/progress.txt.done").exists()
    again = ws.build("//p:x")
    assert ran(again) == set() and attempt_dirs(ws) == []


def test_a_fenced_attempt_hands_its_directory_over_and_cannot_write_into_it(ws):
    """Freeze the first attempt's worker past the lease's TTL: the second builder takes the lease and
    the directory (by rename), with the first's steps in it. The first, woken while the second still
    works, is stopped and reaches nothing of the directory its successor uses."""
    files = workspace(ws, pause_at=5, lease="[lease]\nttl = 2.0\nrenew = 0.4\n")
    first = start_builder(ws, "//p:x")
    wait_for(files["paused"].exists, 120, "the first attempt to write 5 steps")
    frozen = int(files["paused"].read_text())
    files["paused"].unlink()
    os.kill(frozen, signal.SIGSTOP)
    try:
        second = start_builder(ws, "--events", str(ws.root / "second.jsonl"), "//p:x")
        # It takes over once the lease is stale, finds 5 steps, and pauses again at step 5 (no `go` yet).
        wait_for(files["paused"].exists, 120, "the second attempt to take over")
        taker = int(files["paused"].read_text())
        assert taker != frozen
        [handed] = attempt_dirs(ws)
        assert handed.name.startswith("e2-")
    finally:
        os.kill(frozen, signal.SIGCONT)
    wait_for(lambda: gone(frozen), 60, "the fenced attempt's worker to stop")
    assert attempt_dirs(ws) == [handed]
    files["go"].touch()
    _, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert "lost the lease on //p:x" in err1
    lines = progress_lines(ws.root / "mbuild-out/p/x/progress.txt")
    assert lines == [(i, frozen) for i in range(5)] + [(i, taker) for i in range(5, 10)]
    events = [json.loads(line) for line in (ws.root / "second.jsonl").read_text().splitlines()]
    assert statuses(events)["//p:x"] == "ran"


def test_resumable_must_be_a_bool(ws):
    ws.build_file("p", 'py_function(name="x", fn="a.b:c", resumable="yes")\n')
    proc = ws.mbuild("build", "//p:x")
    assert proc.returncode != 0
    assert "attribute 'resumable' must be True or False, got 'yes'" in proc.stderr and "Traceback" not in proc.stderr
