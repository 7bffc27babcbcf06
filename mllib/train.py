"""Stage 5: train the Llama model with AdamW (warmup + cosine) on random windows of the train split."""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import jax
import numpy as np
import optax

from mllib.checkpoint import save_checkpoint
from mllib.config import LlamaConfig, TrainConfig
from mllib.model import Params, count_params, init_params, loss_fn
from mllib.progress import Progress, load_progress, make_rng, save_progress
from mllib.shards import read_index, read_split

CHECKPOINT_DIR = "checkpoint"
METRICS_NAME = "metrics.jsonl"


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to learning_rate, then cosine decay until `steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.steps,
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )


def make_optimizer(cfg: TrainConfig, params: Params) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW; norm gains are excluded from weight decay."""
    decay_mask = jax.tree_util.tree_map_with_path(
        lambda path, _: not any("norm" in str(getattr(k, "key", "")) for k in path), params
    )
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask),
    )


def sample_windows(tokens: np.ndarray, rng: np.random.Generator, batch_size: int, seq_len: int) -> np.ndarray:
    """Draw `batch_size` random windows of seq_len + 1 consecutive tokens, as int32 (batch, seq_len + 1)."""
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)
    return tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)


def run_fingerprint(model: LlamaConfig, cfg: TrainConfig, tokens: np.ndarray) -> dict:
    """What a progress checkpoint must have been written under to be resumed: configs and data, not checkpoint_every."""
    train_fields = {k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"}
    data = {"dtype": tokens.dtype.name, "tokens": len(tokens), "sha256": hashlib.sha256(memoryview(np.ascontiguousarray(tokens)).cast("B")).hexdigest()}
    return {"model": asdict(model), "train": train_fields, "data": data}


def start_progress(
    model: LlamaConfig,
    cfg: TrainConfig,
    optimizer: optax.GradientTransformation,
    work_dir: Path | None,
    fingerprint: dict,
    log: Callable[[str], None] | None,
) -> Progress:
    """The newest usable progress checkpoint in work_dir, else step 0: the init from the seed, as without a work_dir."""
    key = jax.random.key(cfg.seed)
    if work_dir is not None:
        params_shape = jax.eval_shape(partial(init_params, model), key)
        opt_state_shape = jax.eval_shape(optimizer.init, params_shape)
        resumed = load_progress(work_dir, fingerprint, params_shape, opt_state_shape, log)
        if log:
            log(f"resuming from step {resumed.step}" if resumed else "no usable progress checkpoint: starting from step 0")
        if resumed is not None:
            return resumed
    params = init_params(model, key)
    rng_state = np.random.default_rng(cfg.seed).bit_generator.state
    return Progress(0, params, optimizer.init(params), rng_state, window=[], last_loss=None, metrics=[])


def train(
    model: LlamaConfig,
    cfg: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    log: Callable[[str], None] | None = None,
    work_dir: Path | None = None,
    on_progress: Callable[..., None] | None = None,
) -> dict:
    """Train from scratch, or resume from `work_dir`; write `out_dir/metrics.jsonl` and the final checkpoint in `out_dir/checkpoint/`.

    Each metrics line is {"step", "train_loss" (mean over the last log_every steps), "lr"}.
    Deterministic for a fixed seed on a given machine (the init uses jax.random.key(seed), the
    batches a numpy PCG64 stream with the same seed): outputs and the returned value hold no
    wall-clock times, so a rerun yields identical bytes. Timings go to `log`.
    With `work_dir`, a progress checkpoint is saved there every `cfg.checkpoint_every` steps (see
    mllib.progress) and the run starts from the newest usable one ("resuming from step N"); the
    outputs are byte-identical to those of an uninterrupted run. Without it, nothing else is written.
    `on_progress(step, total, loss=..., tokens_per_s=...)` is called after every step (mbuild's
    ctx.progress, which rate-limits what it shows).
    Returns final loss, steps, tokens seen and parameter count.
    """
    vocab = read_index(data_dir)["vocab_size"]
    if vocab > model.vocab_size:
        raise ValueError(f"tokenizer has {vocab} tokens but model.vocab_size is {model.vocab_size}")
    tokens = read_split(data_dir, "train")
    if len(tokens) <= model.seq_len:
        raise ValueError(f"train split has {len(tokens)} tokens, need more than seq_len={model.seq_len}")

    # built from shapes alone: a resumed run never computes the init (the decay mask needs only the tree's paths)
    optimizer = make_optimizer(cfg, jax.eval_shape(partial(init_params, model), jax.random.key(cfg.seed)))
    schedule = lr_schedule(cfg)
    fingerprint = run_fingerprint(model, cfg, tokens) if work_dir is not None else {}
    progress = start_progress(model, cfg, optimizer, work_dir, fingerprint, log)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step_fn(params: Params, opt_state: optax.OptState, batch: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, model)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = jax.device_put((progress.params, progress.opt_state))
    rng = make_rng(progress.rng_state)
    window, last_loss, lines = progress.window, progress.last_loss, progress.metrics
    first = progress.step + 1
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out_dir / METRICS_NAME, "w", encoding="utf-8") as metrics:
        metrics.writelines(lines)
        for step in range(first, cfg.steps + 1):
            batch = sample_windows(tokens, rng, cfg.batch_size, model.seq_len)
            params, opt_state, loss = step_fn(params, opt_state, batch)
            window.append(float(loss))
            if on_progress:
                seconds = time.perf_counter() - start
                rate = (step - first + 1) * cfg.batch_size * model.seq_len / seconds if seconds > 0 else 0.0
                on_progress(step, cfg.steps, loss=round(window[-1], 4), tokens_per_s=round(rate))
            if step % cfg.log_every == 0 or step == cfg.steps:
                last_loss = sum(window) / len(window)
                record = {
                    "step": step,
                    "train_loss": round(last_loss, 6),
                    "lr": round(float(schedule(step - 1)), 9),
                }
                lines.append(json.dumps(record) + "\n")
                metrics.write(lines[-1])
                window.clear()
                if log:
                    log(f"step {step}/{cfg.steps} loss {last_loss:.4f} lr {record['lr']:.2e} {time.perf_counter() - start:.1f}s")
            if work_dir is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                saved = time.perf_counter()
                state = Progress(step, params, opt_state, rng.bit_generator.state, window, last_loss, lines)
                path = save_progress(work_dir, state, fingerprint)
                if log:
                    log(f"progress checkpoint {path.name} in {time.perf_counter() - saved:.2f}s")
    if log:
        log(f"trained steps {first}..{cfg.steps} in {time.perf_counter() - start:.1f}s")
    save_checkpoint(out_dir / CHECKPOINT_DIR, model, params, meta={"train": asdict(cfg), "step": cfg.steps})
    return {
        "final_loss": float("nan") if last_loss is None else last_loss,
        "steps": cfg.steps,
        "tokens_seen": cfg.steps * cfg.batch_size * model.seq_len,
        "n_params": count_params(params),
    }
