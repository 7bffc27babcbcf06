"""Tests of the mllib pipeline library on the `tiny` preset: determinism, shapes, round trips, quality."""

from dataclasses import replace
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
from mllib.config import LlamaConfig
from mllib.model import forward, init_params
from mllib.presets import PRESETS, TINY
from mllib.report import write_report
from mllib.shards import read_index, read_split, tokenize_splits
from mllib.tokenizer import train_tokenizer
from mllib.train import CHECKPOINT_DIR, METRICS_NAME, train

CORPUS = Path(__file__).resolve().parents[1] / "experiments" / "data" / "shakespeare.txt.xz"


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
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full tiny run (data stages, training, eval), shared by the tests below."""
    root = tmp_path_factory.mktemp("tiny")
    paths = run_data_stages(root)
    summary = train(TINY.model, TINY.train, paths["data"], root / "train")
    result = evaluate(root / "train" / CHECKPOINT_DIR, paths["data"], TINY.eval_batch_size, TINY.eval_max_windows)
    return {**paths, "root": root, "train_dir": root / "train", "summary": summary, "eval": result}


def test_presets_are_consistent() -> None:
    for preset in PRESETS.values():
        assert preset.model.vocab_size == preset.vocab_size


def test_train_config_rejects_warmup_past_steps() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        replace(TINY.train, steps=10, warmup_steps=10)


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
