"""Nothing an mbuild build started outlives it: not its workers, not an action's shell, not that
shell's background children, even when the builder and the worker are SIGKILLed (Linux)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux-only")

# A genrule whose shell records its own pid, its parent's (the worker) and a background child's,
# then says it is ready and blocks on that child.
HANG = (
    'genrule(name="{name}", outs=["x"], cmd="sleep 1000 & echo $$ $PPID $! > {pids}.tmp && mv {pids}.tmp {pids}; {tail}")\n'
)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has ended: it only waits to be reaped)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)  # polling for the action's handshake file, with a deadline
    return path.read_text()


def _assert_all_end(pids: dict[str, int], seconds: float = 10) -> None:
    """Every process ends within `seconds` (a generous bound: they should end at once)."""
    deadline = time.monotonic() + seconds
    while (alive := {name for name, pid in pids.items() if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive, f"still running after {seconds} s: {', '.join(sorted(alive))}"


def _kill_leftovers(pids: dict[str, int]) -> None:
    for pid in pids.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _builder(ws, label: str) -> subprocess.Popen:
    """The real CLI in a session of its own, so its process group is the builder alone."""
    return subprocess.Popen(
        [sys.executable, "-m", "mbuild.front.cli", "build", label], cwd=ws.root, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@contextlib.contextmanager
def _hanging_build(ws):
    """A build whose one action blocks: yields the builder and the pids of its worker, the action's
    shell and the shell's background sleep; kills whatever is left at the end."""
    pidfile = ws.root / "pids"
    ws.build_file("p", HANG.format(name="hang", pids=pidfile, tail="wait"))
    proc = _builder(ws, "//p:hang")
    pids: dict[str, int] = {}
    try:
        shell, worker, sleeper = map(int, _wait_for(pidfile, proc).split())
        pids.update({"worker": worker, "shell": shell, "background sleep": sleeper})
        assert "mbuild.runners.worker_process" in Path(f"/proc/{worker}/cmdline").read_text()  # the shell's parent is the worker
        yield proc, pids
    finally:
        _kill_leftovers(pids)
        if proc.poll() is None:
            proc.kill()


def test_sigkill_of_the_builder_ends_its_workers_shells_and_their_children(ws):
    with _hanging_build(ws) as (proc, pids):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        _assert_all_end(pids)


def test_sigkill_of_a_worker_ends_its_shell_and_their_children_without_the_driver(ws):
    """The worker dies first (the OOM killer's way) while the driver is stopped and can clean up
    nothing: the worker's reaper ends the rest. Resumed, the build reports the worker's death."""
    with _hanging_build(ws) as (proc, pids):
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            os.kill(pids["worker"], signal.SIGKILL)
            _assert_all_end(pids)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "worker process was killed by SIGKILL" in out + err


def test_a_background_process_left_by_a_finished_action_ends_with_the_build(ws):
    pidfile = ws.root / "pids"
    ws.build_file("p", HANG.format(name="leaves", pids=pidfile, tail="echo done > $@"))
    pids: dict[str, int] = {}
    try:
        ws.build("//p:leaves")  # succeeds; its shell ended, its `sleep 1000 &` did not
        pids = {"background sleep": int(pidfile.read_text().split()[2])}
        _assert_all_end(pids)
    finally:
        _kill_leftovers(pids)


# Stands in for the driver: spawns a real worker (WorkerPool._spawn), puts a task in its socket and
# dies at once. The worker is held at interpreter start-up, before it asks for its parent-death
# signal, by a sitecustomize module that opens a FIFO and reads it until the test closes it.
GATE = '''
import os
gate = os.environ.pop("LIFETIME_GATE", None)
if gate:
    open(os.environ.pop("LIFETIME_GATED"), "w").close()
    with open(gate) as f:
        f.read()
'''

DRIVER = '''
import os, pathlib, signal, sys
from mbuild.runners.pool import WorkerPool
hook, gate, gated, marker = sys.argv[1:]
os.environ.update(PYTHONPATH=hook, LIFETIME_GATE=gate, LIFETIME_GATED=gated)
conn, proc = WorkerPool(0, None)._spawn(0)
conn.send((pathlib.Path.touch, (pathlib.Path(marker),)))
print(proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_worker_whose_driver_died_before_it_started_runs_nothing(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(GATE))
    gate, gated, marker = tmp_path / "gate", tmp_path / "gated", tmp_path / "task-ran"
    os.mkfifo(gate)
    out, err = tmp_path / "driver.out", tmp_path / "driver.err"
    with out.open("w") as stdout, err.open("w") as stderr:  # files, not pipes: the worker inherits them
        driver = subprocess.run([sys.executable, "-c", DRIVER, str(hook), str(gate), str(gated), str(marker)], stdout=stdout, stderr=stderr, timeout=120)
    assert driver.returncode == -signal.SIGKILL, err.read_text()
    worker = int(out.read_text())
    try:
        deadline = time.monotonic() + 120
        while not gated.exists():  # the worker is at the gate, with its task in the socket
            assert time.monotonic() < deadline and _alive(worker), "the worker never reached the gate"
            time.sleep(0.02)
        os.close(os.open(gate, os.O_WRONLY))  # let it go: the driver is already dead
        _assert_all_end({"worker": worker}, seconds=60)
        assert not marker.exists(), "the worker ran a task after its driver had died"
    finally:
        _kill_leftovers({"worker": worker})
