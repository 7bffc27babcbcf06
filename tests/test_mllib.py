"""Tests of the mllib pipeline library on the `tiny` preset: determinism, shapes, round trips, quality, resuming."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("tokenizers")
pytest.importorskip("matplotlib")

import jax
import numpy as np
from tokenizers import Tokenizer

from mllib.checkpoint import PARAMS_NAME, load_checkpoint, save_checkpoint
from mllib.corpus import prepare_corpus, read_text
from mllib.evaluate import evaluate
from mllib.config import LlamaConfig, TrainConfig
from mllib.model import forward, init_params
from mllib.presets import PRESETS, TINY
from mllib.report import write_report
from mllib.shards import read_index, read_split, tokenize_splits
from mllib.tokenizer import train_tokenizer
from mllib.progress import OPT_STATE_NAME, STATE_NAME, Progress, read_progress, save_progress, step_dirs
from mllib.train import CHECKPOINT_DIR, METRICS_NAME, make_optimizer, run_fingerprint, train

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "experiments" / "data" / "shakespeare.txt.xz"
# A model small enough that compiling dominates: the resume tests train it several times.
RESUME_MODEL = LlamaConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=2, d_ff=64, seq_len=32)
# log_every and checkpoint_every are coprime, so progress checkpoints fall mid-window (the window is saved too).
RESUME_TRAIN = TrainConfig(steps=30, batch_size=4, learning_rate=5e-3, warmup_steps=3, log_every=3, checkpoint_every=5)


def files_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def paragraphs(text: str) -> list[str]:
    return sorted(p.strip("\n") for p in text.split("\n\n") if p.strip())


def run_data_stages(root: Path) -> dict[str, Path]:
    """Corpus split, tokenizer and shards for the tiny preset under `root`."""
    prepare_corpus(CORPUS, root / "corpus", TINY.val_fraction, TINY.split_seed, max_bytes=TINY.corpus_max_bytes)
    train_tokenizer(root / "corpus" / "train.txt", TINY.vocab_size, root / "tokenizer.json")
    splits = {s: root / "corpus" / f"{s}.txt" for s in ("train", "val")}
    tokenize_splits(root / "tokenizer.json", splits, root / "data", TINY.shard_tokens)
    return {"corpus": root / "corpus", "tokenizer": root / "tokenizer.json", "data": root / "data"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny preset's corpus, tokenizer and token shards."""
    return run_data_stages(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="module")
def pipeline(tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full tiny run (data stages, training, eval), shared by the tests below."""
    root = tmp_path_factory.mktemp("tiny")
    paths = tiny_data
    summary = train(TINY.model, TINY.train, paths["data"], root / "train")
    result = evaluate(root / "train" / CHECKPOINT_DIR, paths["data"], TINY.eval_batch_size, TINY.eval_max_windows)
    return {**paths, "root": root, "train_dir": root / "train", "summary": summary, "eval": result}


def test_presets_are_consistent() -> None:
    for preset in PRESETS.values():
        assert preset.model.vocab_size == preset.vocab_size


def test_train_config_rejects_warmup_past_steps() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        replace(TINY.train, steps=10, warmup_steps=10)


def test_train_config_rejects_negative_checkpoint_every() -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        replace(TINY.train, checkpoint_every=-1)


def test_corpus_split_is_deterministic_and_lossless(pipeline: dict, tmp_path: Path) -> None:
    stats = prepare_corpus(CORPUS, tmp_path, TINY.val_fraction, TINY.split_seed, max_bytes=TINY.corpus_max_bytes)
    assert files_bytes(tmp_path) == files_bytes(pipeline["corpus"])
    assert stats["train"]["bytes"] > 5 * stats["val"]["bytes"] > 0
    full = read_text(CORPUS).encode()[: TINY.corpus_max_bytes].decode("utf-8", errors="ignore")
    split = (tmp_path / "train.txt").read_text() + "\n\n" + (tmp_path / "val.txt").read_text()
    assert paragraphs(split) == paragraphs(full)


def test_tokenizer_is_deterministic_and_lossless(pipeline: dict, tmp_path: Path) -> None:
    stats = train_tokenizer(pipeline["corpus"] / "train.txt", TINY.vocab_size, tmp_path / "tokenizer.json")
    assert (tmp_path / "tokenizer.json").read_bytes() == pipeline["tokenizer"].read_bytes()
    assert stats["vocab_size"] == TINY.vocab_size
    tok = Tokenizer.from_file(str(pipeline["tokenizer"]))
    text = (pipeline["corpus"] / "val.txt").read_text()[:2000] + " naïve — ünïcödé ✓\n"
    assert tok.decode(tok.encode(text).ids) == text


def test_tokenize_is_deterministic_and_indexed(pipeline: dict, tmp_path: Path) -> None:
    splits = {s: pipeline["corpus"] / f"{s}.txt" for s in ("train", "val")}
    index = tokenize_splits(pipeline["tokenizer"], splits, tmp_path, TINY.shard_tokens)
    assert files_bytes(tmp_path) == files_bytes(pipeline["data"])
    assert index == read_index(tmp_path)
    assert index["dtype"] == "uint16" and index["vocab_size"] == TINY.vocab_size
    train_meta = index["splits"]["train"]
    assert len(train_meta["shards"]) > 1
    assert all(s["tokens"] <= TINY.shard_tokens for s in train_meta["shards"])
    tokens = read_split(tmp_path, "train")
    assert tokens.dtype == np.uint16 and len(tokens) == train_meta["tokens"]
    assert int(tokens.max()) < TINY.vocab_size
    tok = Tokenizer.from_file(str(pipeline["tokenizer"]))
    assert tok.decode(read_split(tmp_path, "val").tolist()) == splits["val"].read_text()


def test_forward_shapes_and_causality() -> None:
    cfg = LlamaConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=48, seq_len=16)
    params = init_params(cfg, jax.random.key(0))
    tokens = np.arange(2 * 16, dtype=np.int32).reshape(2, 16) % 64
    logits = np.asarray(forward(params, tokens, cfg))
    assert logits.shape == (2, 16, 64)
    changed = tokens.copy()
    changed[:, 10:] = 0
    logits2 = np.asarray(forward(params, changed, cfg))
    np.testing.assert_allclose(logits[:, :10], logits2[:, :10], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits[:, 10:], logits2[:, 10:])


def test_training_writes_metrics_and_beats_unigram(pipeline: dict) -> None:
    summary, result = pipeline["summary"], pipeline["eval"]
    assert summary["steps"] == TINY.train.steps
    assert summary["tokens_seen"] == TINY.train.steps * TINY.train.batch_size * TINY.model.seq_len
    lines = (pipeline["train_dir"] / METRICS_NAME).read_text().splitlines()
    assert len(lines) == TINY.train.steps // TINY.train.log_every
    assert result["eval_tokens"] == TINY.eval_max_windows * TINY.model.seq_len
    assert result["val_loss"] < result["unigram_val_loss"] - 0.3
    assert result["val_ppl"] == pytest.approx(np.exp(result["val_loss"]))


def test_checkpoint_round_trip_gives_same_eval(pipeline: dict, tmp_path: Path) -> None:
    ckpt = pipeline["train_dir"] / CHECKPOINT_DIR
    cfg, params = load_checkpoint(ckpt)
    assert cfg == TINY.model
    assert params["layers"]["wq"].shape == (cfg.n_layers, cfg.d_model, cfg.d_model)
    assert params["embed"].shape == (cfg.vocab_size, cfg.d_model)
    save_checkpoint(tmp_path, cfg, params, meta=None)
    assert (tmp_path / PARAMS_NAME).read_bytes() == (ckpt / PARAMS_NAME).read_bytes()
    again = evaluate(tmp_path, pipeline["data"], TINY.eval_batch_size, TINY.eval_max_windows)
    assert again == pipeline["eval"]


def test_training_is_reproducible(pipeline: dict, tmp_path: Path) -> None:
    train(TINY.model, TINY.train, pipeline["data"], tmp_path)
    assert files_bytes(tmp_path / CHECKPOINT_DIR) == files_bytes(pipeline["train_dir"] / CHECKPOINT_DIR)


def test_different_seed_changes_params(pipeline: dict, tmp_path: Path) -> None:
    short = replace(TINY.train, steps=2, warmup_steps=1, log_every=1)
    train(TINY.model, short, pipeline["data"], tmp_path / "a")
    train(TINY.model, replace(short, seed=1), pipeline["data"], tmp_path / "b")
    a = (tmp_path / "a" / CHECKPOINT_DIR / PARAMS_NAME).read_bytes()
    b = (tmp_path / "b" / CHECKPOINT_DIR / PARAMS_NAME).read_bytes()
    assert a != b


def test_report(pipeline: dict, tmp_path: Path) -> None:
    out = write_report(pipeline["train_dir"] / METRICS_NAME, pipeline["eval"], tmp_path, "tiny")
    report = (tmp_path / out["report"]).read_text()
    assert report.startswith("# tiny") and "unigram baseline loss" in report and "![training loss](loss.png)" in report
    assert (tmp_path / out["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["gain_over_unigram"] > 0


# --- resuming from progress checkpoints (train(..., work_dir=...)) ---

CHILD = """
import json, signal, sys
from pathlib import Path
from mllib.config import LlamaConfig, TrainConfig
from mllib.train import train

spec = json.loads(sys.argv[1])
log_file = open(spec["log"], "a", encoding="utf-8")

def log(line):
    log_file.write(line + "\\n")
    log_file.flush()
    if spec["park_at"] and line.startswith(spec["park_at"]):
        signal.pause()  # stay mid-run until the test kills this process

train(LlamaConfig(**spec["model"]), TrainConfig(**spec["train"]), Path(spec["data"]), Path(spec["out"]), log, Path(spec["work"]))
"""


def start_train_child(data: Path, out: Path, work: Path, log: Path, park_at: str = "") -> subprocess.Popen:
    """train() in a fresh interpreter, logging to `log`; with park_at, it blocks at the first log line starting so."""
    spec = {"model": asdict(RESUME_MODEL), "train": asdict(RESUME_TRAIN), "data": str(data), "out": str(out), "work": str(work), "log": str(log), "park_at": park_at}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, stderr=subprocess.PIPE, text=True)


def wait_for_path(path: Path, child: subprocess.Popen, deadline_s: float = 240) -> None:
    """Poll until `path` exists; fail if the child exits first or the (generous) deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        if child.poll() is not None:
            pytest.fail(f"child exited {child.returncode} before {path.name} appeared:\n{child.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear within {deadline_s}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def resume_ref(tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted run without work_dir (the reference bytes), and one with a work_dir, kept pristine."""
    root = tmp_path_factory.mktemp("resume")
    train(RESUME_MODEL, RESUME_TRAIN, tiny_data["data"], root / "plain" / "out")
    train(RESUME_MODEL, RESUME_TRAIN, tiny_data["data"], root / "with_work" / "out", work_dir=root / "with_work" / "work")
    return {"data": tiny_data["data"], "root": root, "out": root / "plain" / "out", "work": root / "with_work" / "work"}


def valid_steps(work: Path, data: Path) -> list[int]:
    """Steps of the progress checkpoints in `work` that load, after checking there are no leftovers beside them."""
    assert [p.name for p in work.iterdir() if not p.name.startswith("step-")] == []
    params = init_params(RESUME_MODEL, jax.random.key(RESUME_TRAIN.seed))
    opt_state = make_optimizer(RESUME_TRAIN, params).init(params)
    fingerprint = run_fingerprint(RESUME_MODEL, RESUME_TRAIN, read_split(data, "train"))
    steps = []
    for step, path in step_dirs(work):
        read_progress(path, step, fingerprint, params, opt_state)  # raises if unusable
        steps.append(step)
    return steps


def test_without_work_dir_only_out_dir_is_written(resume_ref: dict) -> None:
    plain = resume_ref["root"] / "plain"
    assert sorted(files_bytes(plain)) == ["out/checkpoint/config.json", "out/checkpoint/params.npz", "out/metrics.jsonl"]
    meta = json.loads((plain / "out" / CHECKPOINT_DIR / "config.json").read_text())["meta"]
    assert meta == {"train": asdict(RESUME_TRAIN), "step": RESUME_TRAIN.steps}


def test_work_dir_changes_no_output_byte_and_keeps_two_checkpoints(resume_ref: dict) -> None:
    assert files_bytes(resume_ref["root"] / "with_work" / "out") == files_bytes(resume_ref["out"])
    # checkpoints at 5, 10, 15, 20, 25 (none at the final step 30); the last two are kept
    assert valid_steps(resume_ref["work"], resume_ref["data"]) == [25, 20]


def test_killed_run_resumes_to_identical_outputs(resume_ref: dict, tmp_path: Path) -> None:
    work, log = tmp_path / "work", tmp_path / "train.log"
    child = start_train_child(resume_ref["data"], tmp_path / "killed", work, log, park_at="step 9/")
    try:
        wait_for_path(work / "step-000005", child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / CHECKPOINT_DIR).exists()
    assert [p.name for p in work.iterdir()] == ["step-000005"]

    log.write_text("")
    resumed = start_train_child(resume_ref["data"], tmp_path / "resumed", work, log)
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    assert "resuming from step 5" in log.read_text().splitlines()
    assert files_bytes(tmp_path / "resumed") == files_bytes(resume_ref["out"])


def damage(work: Path, case: str, data: Path) -> None:
    """Spoil the newest progress checkpoint(s) of a copied work dir as a crash, a bug or another run would."""
    newest, previous = work / "step-000025", work / "step-000020"
    if case == "truncated_npz":
        npz = newest / OPT_STATE_NAME
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif case == "missing_file":
        (newest / STATE_NAME).unlink()
    elif case == "half_written":  # died while writing step 25: only its temporary directory exists
        newest.rename(work / ".tmp-step-000025-x")
        (work / ".tmp-step-000025-x" / "params.npz").write_bytes(b"PK")
    elif case in ("bad_structure", "other_run"):
        params = init_params(RESUME_MODEL, jax.random.key(RESUME_TRAIN.seed))
        opt_state = make_optimizer(RESUME_TRAIN, params).init(params)
        fingerprint = run_fingerprint(RESUME_MODEL, RESUME_TRAIN, read_split(data, "train"))
        good = read_progress(newest, 25, fingerprint, params, opt_state)
        if case == "bad_structure":  # consistent digests, but not this optimizer's state
            spoiled = Progress(25, good.params, {"mu": np.zeros(3, np.float32)}, good.rng_state, good.window, good.last_loss, good.metrics)
        else:  # another seed's run
            spoiled, fingerprint = good, {**fingerprint, "train": {**fingerprint["train"], "seed": 1}}
        save_progress(work, spoiled, fingerprint)
    elif case == "both_truncated":
        for ckpt in (newest, previous):
            npz = ckpt / "params.npz"
            npz.write_bytes(npz.read_bytes()[:-100])
    else:
        raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "resumes_from"),
    [("truncated_npz", 20), ("missing_file", 20), ("half_written", 20), ("bad_structure", 20), ("other_run", 20), ("both_truncated", 0)],
)
def test_unusable_progress_checkpoint_is_skipped(resume_ref: dict, tmp_path: Path, case: str, resumes_from: int) -> None:
    work = tmp_path / "work"
    shutil.copytree(resume_ref["work"], work)
    damage(work, case, resume_ref["data"])
    lines: list[str] = []
    train(RESUME_MODEL, RESUME_TRAIN, resume_ref["data"], tmp_path / "out", log=lines.append, work_dir=work)
    skipped = [line for line in lines if line.startswith("skipping progress checkpoint")]
    if case == "half_written":  # a temporary directory is never even considered
        assert skipped == []
    else:
        assert skipped and skipped[0].startswith("skipping progress checkpoint step-000025: ")
    assert [line for line in lines if line.startswith("resuming")] == ([f"resuming from step {resumes_from}"] if resumes_from else [])
    assert files_bytes(tmp_path / "out") == files_bytes(resume_ref["out"])
    # the spoiled checkpoints were rewritten or removed, leftovers cleared
    assert valid_steps(work, resume_ref["data"]) == [25, 20]
