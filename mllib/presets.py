"""Named pipeline sizes as plain frozen data: `tiny` for tests, `small` to show how the rules scale up.

The default pipeline spells its sizes out in experiments/BUILD.py (< 5 min cold on 2 CPU cores).
"""

from dataclasses import dataclass

from mllib.config import LlamaConfig, TrainConfig


@dataclass(frozen=True)
class Preset:
    """Every knob of one pipeline run, stage by stage."""

    name: str
    corpus_max_bytes: int | None  # None: the whole corpus
    val_fraction: float
    split_seed: int
    vocab_size: int
    shard_tokens: int
    model: LlamaConfig
    train: TrainConfig
    eval_batch_size: int
    eval_max_windows: int | None  # None: the whole validation split


TINY = Preset(
    name="tiny",
    corpus_max_bytes=300_000,
    val_fraction=0.1,
    split_seed=0,
    vocab_size=512,
    shard_tokens=32_768,
    model=LlamaConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=2, d_ff=176, seq_len=64),
    train=TrainConfig(steps=200, batch_size=16, learning_rate=5e-3, warmup_steps=20, seed=0, log_every=10, checkpoint_every=20),
    eval_batch_size=32,
    eval_max_windows=128,
)

SMALL = Preset(
    name="small",
    corpus_max_bytes=None,
    val_fraction=0.05,
    split_seed=0,
    vocab_size=8192,
    shard_tokens=1 << 20,
    model=LlamaConfig(vocab_size=8192, d_model=384, n_layers=8, n_heads=6, d_ff=1024, seq_len=256),
    train=TrainConfig(steps=5000, batch_size=32, learning_rate=1e-3, warmup_steps=200, seed=0, log_every=50),
    eval_batch_size=16,
    eval_max_windows=None,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (TINY, SMALL)}
