"""Stage 6: validation loss/perplexity of a checkpoint, next to a unigram baseline fitted on train tokens."""

import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mllib.checkpoint import load_checkpoint
from mllib.config import LlamaConfig
from mllib.model import Params, token_losses
from mllib.shards import read_index, read_split


def eval_windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping windows of seq_len + 1 tokens (stride seq_len) as int32 (n, seq_len + 1)."""
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise ValueError(f"need more than seq_len={seq_len} tokens to evaluate, got {len(tokens)}")
    return tokens[np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)].astype(np.int32)


def unigram_log_probs(train_tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Add-one smoothed log-probabilities of each token id, from train-split frequencies."""
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def model_loss(params: Params, cfg: LlamaConfig, windows: np.ndarray, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) of the model over all windows."""
    losses = jax.jit(partial(token_losses, cfg=cfg))
    total = 0.0
    for i in range(0, len(windows), batch_size):
        total += float(jnp.sum(losses(params, windows[i : i + batch_size])))
    return total / (len(windows) * cfg.seq_len)


def evaluate(checkpoint_dir: Path, data_dir: Path, batch_size: int = 16, max_windows: int | None = None) -> dict:
    """Validation loss, perplexity and bits per byte of the checkpoint, and the same for a unigram baseline.

    Both models are scored on exactly the same target tokens: the first `max_windows` (all if None)
    non-overlapping val windows of the model's seq_len.
    """
    cfg, params = load_checkpoint(checkpoint_dir)
    index = read_index(data_dir)
    windows = eval_windows(read_split(data_dir, "val"), cfg.seq_len)[:max_windows]
    loss = model_loss(params, cfg, windows, batch_size)
    log_p = unigram_log_probs(read_split(data_dir, "train"), index["vocab_size"])
    unigram = float(-log_p[windows[:, 1:]].mean())
    val = index["splits"]["val"]
    tokens_per_byte = val["tokens"] / val["bytes"]
    return {
        "val_loss": loss,
        "val_ppl": math.exp(loss),
        "val_bits_per_byte": loss * tokens_per_byte / math.log(2),
        "unigram_val_loss": unigram,
        "unigram_val_ppl": math.exp(unigram),
        "unigram_bits_per_byte": unigram * tokens_per_byte / math.log(2),
        "eval_tokens": int(windows[:, 1:].size),
    }
