"""The Shakespeare pipeline in the Python step front (experiments/llama_steps.py), at a size that
trains in a second: a second run runs nothing, a new learning rate would rerun exactly training and
what reads it (the dry run's plan), and a comment in one wiring module reruns that step only (early cutoff)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

REPO = Path(__file__).resolve().parents[1]

MICRO = '''
import dataclasses, os, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mbuild import executor_main
from experiments.llama_steps import llama
from mllib.config import LlamaConfig, TrainConfig
from mllib.presets import TINY

MICRO = dataclasses.replace(
    TINY, name="micro", corpus_max_bytes=60_000, vocab_size=300, shard_tokens=8192,
    model=LlamaConfig(vocab_size=300, d_model=32, n_layers=1, n_heads=2, d_ff=64, seq_len=32),
    train=TrainConfig(steps=6, batch_size=4, learning_rate=float(os.environ.get("LR", "5e-3")), warmup_steps=1, log_every=3, checkpoint_every=0),
    eval_batch_size=8, eval_max_windows=8,
)
executor_main(steps=[llama("micro", MICRO)])
'''


def script(root: Path, *args: str, lr: str = "5e-3") -> str:
    env = {"PATH": "/usr/bin:/bin", "LR": lr, "HOME": str(root)}
    proc = subprocess.run([sys.executable, "experiments/micro_steps.py", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def run(root: Path, lr: str = "5e-3") -> dict[str, str]:
    events = root / "events.jsonl"
    events.unlink(missing_ok=True)
    script(root, "--events", str(events), lr=lr)
    records = [json.loads(line) for line in events.read_text().splitlines()]
    return {r["label"].removeprefix("//steps:"): r["status"] for r in records if "label" in r} | {
        "summary": next(r for r in records if "label" not in r)
    }


def test_the_pipeline_reruns_what_changed_and_cuts_off_early(tmp_path: Path):
    root = tmp_path / "ws"
    (root / "experiments" / "data").mkdir(parents=True)
    shutil.copytree(REPO / "mllib", root / "mllib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "experiments" / "steps", root / "experiments" / "steps", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "experiments" / "llama_steps.py", root / "experiments")
    shutil.copy(REPO / "experiments" / "data" / "shakespeare.txt.xz", root / "experiments" / "data")
    (root / "experiments" / "micro_steps.py").write_text(MICRO)
    (root / "WORKSPACE.toml").write_text("")

    stages = ["corpus/shakespeare", "tokenizer/300", "tokens", "train_llama", "eval", "report", "llama/micro"]
    first = run(root)
    assert [first[s] for s in stages] == ["ran"] * 7
    assert len(list((root / "mbuild-steps").glob("report_*"))) == 1
    again = run(root)
    assert [again[s] for s in stages] == ["cache_hit"] * 7
    plan = script(root, "--dry_run", lr="1e-2")  # (a dry run: training again would only cost time)
    would = {line.split()[2].rstrip(":") for line in plan.splitlines() if line.startswith("would run")}
    assert would == {"train_llama", "eval", "report", "llama/micro"}
    assert "would run  train_llama: changed config.train.learning_rate: 0.005 -> 0.01" in plan
    wiring = root / "experiments" / "steps" / "tokenizer.py"
    wiring.write_text(wiring.read_text() + "\n# a comment\n")
    cut = run(root)
    assert {s for s in stages if cut[s] == "ran"} == {"tokenizer/300"}
    assert cut["summary"]["summary"]["early_cutoff"] >= 1
