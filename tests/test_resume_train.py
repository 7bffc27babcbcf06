"""`train_llama` is resumable: a builder SIGKILLed after its first progress checkpoint is rebuilt
from that checkpoint (`resuming from step N`), to outputs byte-identical to an uninterrupted run.

The tiny pipeline with a smaller model and more steps (compiling dominates; the steps run long
enough to be killed mid-run). Both builders share one JAX compilation cache, so the second compile
of the same step function is a cache read.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ran

pytest.importorskip("jax")

REPO = Path(__file__).resolve().parents[1]
TRAIN = "//experiments/tiny:train_llama"
BUILD = """
from dataclasses import replace
from mllib.config import LlamaConfig
from mllib.presets import TINY
from rules.llm import llama_pipeline

preset = replace(
    TINY,
    model=LlamaConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=2, d_ff=64, seq_len=32),
    train=replace(TINY.train, steps=400, batch_size=8, warmup_steps=40, checkpoint_every=20),
)
llama_pipeline(preset, corpus="//experiments:data/shakespeare.txt.xz")
"""


def builder(root: Path, compile_cache: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(compile_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "mbuild.front.cli", "build", *args], cwd=root, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    return err


# train_llama is remote-tagged: as a fray job, it works under the in-place prefix (default <cache>/inplace)
WORK = ".mbuild/cache/inplace/.mbuild-work"


def checkpoints(root: Path) -> list[int]:
    """Steps of the complete progress checkpoints in train_llama's working directory."""
    return sorted(int(p.name[5:]) for p in root.glob(f"{WORK}/*/e*-*/step-*") if p.is_dir())


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspaces(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two copies of the workspace with the token shards built (one for the uninterrupted run)."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "WORKSPACE.toml", root)
    for part in ("rules", "mllib", "experiments"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "experiments/tiny/BUILD.py").write_text(BUILD)
    compile_cache = tmp_path / "jax-cache"
    finish(builder(root, compile_cache, "//experiments/tiny:tokens"))
    plain = tmp_path / "plain"
    shutil.copytree(root, plain, symlinks=True)
    return root, plain, compile_cache


def test_killed_training_resumes_from_its_checkpoint_to_identical_parameters(workspaces):
    root, plain, compile_cache = workspaces
    reference = builder(plain, compile_cache, TRAIN)
    finish(reference)
    killed = builder(root, compile_cache, TRAIN)
    deadline = time.monotonic() + 600
    while not checkpoints(root):
        assert killed.poll() is None, killed.communicate()[1][-4000:]
        assert time.monotonic() < deadline, "no progress checkpoint appeared"
        time.sleep(0.01)  # polling for the first checkpoint
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    left = checkpoints(root)
    assert left and left[-1] < 400, left  # killed mid-run
    events_file = root / "events.jsonl"
    finish(builder(root, compile_cache, "--events", str(events_file), TRAIN))
    import json

    assert ran([json.loads(line) for line in events_file.read_text().splitlines()]) == {TRAIN}
    logs = "".join(p.read_text() for p in (root / ".mbuild/cache/logs").glob("*.log"))
    assert re.findall(r"^resuming from step \d+$", logs, re.M) == [f"resuming from step {left[-1]}"]
    out = "mbuild-out/experiments/tiny/train_llama"
    assert tree_bytes(root / out) == tree_bytes(plain / out)  # params.npz, config.json, metrics.jsonl
    assert checkpoints(root) == [] and not any((root / WORK).iterdir())
