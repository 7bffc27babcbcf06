"""Shared fixtures: throwaway workspaces, and running the real `mbuild` command on them."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tests press Ctrl-C on the builds they start. A process started in the background (`pytest &`,
# some CI runners) has SIGINT ignored, and an ignored signal stays ignored across exec, so the
# builds would never see it. Handling it here makes every child start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_counter = itertools.count()


@dataclass
class Workspace:
    """A workspace on disk. Rule modules get unique names: the test process imports each once."""

    root: Path
    rules: str  # the unique module name holding this workspace's test rules

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def build_file(self, package: str, text: str) -> Path:
        header = f"from {self.rules} import *\nfrom mbuild.rules import genrule, py_function, filegroup\n"
        return self.write(f"{package}/BUILD.py", header + textwrap.dedent(text).lstrip("\n"))

    def mbuild(self, *args: str, check: bool | None = None, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run the real CLI in a subprocess (fresh interpreter, as a user would)."""
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "mbuild.front.cli", *args], cwd=cwd or self.root, env=full_env, capture_output=True, text=True, timeout=300
        )
        if check is True and proc.returncode != 0:
            raise AssertionError(f"mbuild {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def build(self, *labels: str, extra: tuple[str, ...] = (), ok: bool = True) -> list[dict]:
        """Build via the CLI with --events; returns the event records (asserting success if ok)."""
        events = self.root / f".events-{next(_counter)}.jsonl"
        proc = self.mbuild("build", "--events", str(events), *extra, *labels)
        if ok and proc.returncode != 0:
            raise AssertionError(f"build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        self.last = proc
        return [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []


def statuses(events: list[dict]) -> dict[str, str]:
    """label -> status, from an events list."""
    return {e["label"]: e["status"] for e in events if "label" in e}


def ran(events: list[dict]) -> set[str]:
    return {label for label, status in statuses(events).items() if status == "ran"}


# A counter rule that records each execution in a side file outside the cache.
COUNTING_RULES = '''
import os, json
from mbuild import attr, rule

@rule(attrs={"deps": attr.label_list(default=[]), "text": attr.string(default=""), "log": attr.string(default="")}, outputs=["out.txt"])
def step(ctx):
    parts = [ctx.attr.text]
    for d in ctx.inputs.deps:
        files = sorted(p for p in d.rglob("*") if p.is_file()) if d.is_dir() else [d]
        parts.extend(p.read_text() for p in files)
    (ctx.out / "out.txt").write_text("+".join(parts))
    if ctx.attr.log:
        with open(ctx.attr.log, "a") as f:
            f.write(ctx.attr.text + "\\n")
    return {"len": len("+".join(parts))}

@rule(attrs={"msg": attr.string(default="boom")}, outputs=["never.txt"])
def fail(ctx):
    raise RuntimeError(ctx.attr.msg)

@rule(attrs={}, outputs=["declared.txt"])
def forgets_output(ctx):
    (ctx.out / "other.txt").write_text("x")
'''


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "test"\n')
    name = f"testrules_{os.getpid()}_{next(_counter)}"
    w = Workspace(root, name)
    w.write(f"{name}.py", COUNTING_RULES)
    return w


# --- real storage servers (session-wide; see servers.py) ---------------------------------------


@pytest.fixture(scope="session")
def gcs_server():
    from servers import gcs_emulator

    with gcs_emulator() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server():
    from servers import s3_server as start

    with start() as server:
        yield server
