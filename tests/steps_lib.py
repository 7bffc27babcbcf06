"""Step functions for tests/test_steps*.py: importable (their module's source is in the keys), each
appending its name to $STEPS_TEST_LOG when it runs, so tests count executions."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from mbuild import StepRef, deferred, output, step


def ran(name: str) -> None:
    log = os.environ.get("STEPS_TEST_LOG")
    if log:
        with open(log, "a") as f:  # O_APPEND: one line per call, whatever the threads
            f.write(name + "\n")


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def write_text(output_path: str, text: str = "x") -> dict:
    ran(f"write:{text}")
    Path(output_path, "out.txt").write_text(text)
    return {"text": text}


def concat(output_path: str, inputs: list, name: str) -> None:
    """Reads each input's out.txt (paths resolved at run time) and writes their concatenation."""
    ran(name)
    parts = [Path(p, "out.txt").read_text() for p in inputs]
    Path(output_path, "out.txt").write_text(name + "(" + ",".join(parts) + ")")


def fail(output_path: str) -> None:
    ran("fail")
    raise ValueError("boom")


def slow_once(output_path: str, gate: str) -> None:
    """Waits until `gate` exists (the test opens it once every runner has started)."""
    ran("slow")
    for _ in range(2000):
        if Path(gate).exists():
            break
        threading.Event().wait(0.005)
    Path(output_path, "out.txt").write_text("slow")


# --- the traced front ------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinConfig:
    inputs: list
    output_path: object
    label: str


def _join(config: JoinConfig) -> dict:
    ran(config.label)
    parts = [Path(p, "out.txt").read_text() if Path(p, "out.txt").exists() else "" for p in config.inputs]
    Path(config.output_path).mkdir(parents=True, exist_ok=True)
    Path(config.output_path, "out.txt").write_text(config.label + "(" + ",".join(parts) + ")")
    return {"label": config.label}


join = deferred(_join)


@step(name="node/{label}")
def node(label: str, inputs: list[StepRef]) -> object:
    return join(JoinConfig(inputs=list(inputs), output_path=output(), label=label))


@step(name="all")
def group(refs: list[StepRef]) -> list[StepRef]:
    return list(refs)


def where(output_path: str) -> dict:
    """Records the thread it runs on (a fray LocalClient job runs on a thread of its own)."""
    ran(f"where:{threading.current_thread().name}")
    Path(output_path, "out.txt").write_text("remote")
    return {"thread": threading.current_thread().name}


def meet(output_path: str, me: str, other: str, rendezvous: str) -> None:
    """Announces itself, then waits for `other` to have started: only concurrent steps both finish."""
    ran(me)
    Path(rendezvous, me).touch()
    for _ in range(4000):
        if Path(rendezvous, other).exists():
            Path(output_path, "out.txt").write_text(me)
            return
        threading.Event().wait(0.005)
    raise TimeoutError(f"{other} never started while {me} ran")


def loses_lease_once(output_path: str, flag: str) -> dict:
    """The first call's lease is lost as it finishes (as if another builder took it over): that
    run must publish nothing; the retry publishes."""
    from mbuild import current_lease

    first = not Path(flag).exists()
    Path(flag).touch()
    ran("first" if first else "retry")
    Path(output_path, "out.txt").write_text("first" if first else "retry")
    if first:
        current_lease().lease.mark_lost()
    return {"attempt": "first" if first else "retry"}


@dataclass(frozen=True)
class Stats:
    tokens: int
    shards: list[str]
    note: str | None = None


def count(output_path: str) -> Stats:
    """A step with a typed result (kept as an Artifact, loaded back as Stats)."""
    ran("count")
    Path(output_path, "data.txt").write_text("a b c")
    return Stats(tokens=3, shards=["data.txt"])


def count_model(output_path: str) -> "StatsModel":
    ran("count_model")
    return StatsModel(tokens=4, name="m")


try:
    from pydantic import BaseModel

    class StatsModel(BaseModel):
        tokens: int
        name: str
except ImportError:  # pydantic is optional for mbuild
    StatsModel = None  # type: ignore[assignment,misc]


def forever(output_path: str, started: str) -> None:
    """Runs until stopped (a Python loop, so an asynchronous stop lands at once)."""
    ran("forever")
    Path(started).write_text(str(os.getpid()))
    while True:
        threading.Event().wait(0.01)


def record_pid(output_path: str) -> dict:
    """Appends this process's pid to <output>/pids.txt: where (and how often) the step ran."""
    with open(Path(output_path, "pids.txt"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"pid": os.getpid()}


def stalls_once(output_path: str, flag: str) -> str:
    """The first call's heartbeat hangs (as in a long stall), so its lease lapses while it runs: it
    must be stopped (LeaseLost in its thread) and publish nothing; the retry publishes."""
    from mbuild import current_lease

    if Path(flag).exists():
        ran("retry")
        return "retry"
    Path(flag).touch()
    ran("first")
    beat = current_lease()
    gate = threading.Event()
    beat.lease.renew = lambda: gate.wait(20)  # its renewals hang
    try:
        while True:  # a Python loop: the lost lease interrupts it
            threading.Event().wait(0.01)
    finally:
        ran("stopped")
        gate.set()


@pytest.fixture
def log(tmp_path: Path, monkeypatch) -> Path:
    """The file steps append their runs to (STEPS_TEST_LOG), per test."""
    path = tmp_path / "runs.log"
    monkeypatch.setenv("STEPS_TEST_LOG", str(path))
    return path


def make_ws(root: Path) -> Path:
    """An empty workspace at `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "WORKSPACE.toml").write_text("")
    return root
