"""A small Llama trained on Shakespeare, written in the Python step front (the BUILD-file front of
the same pipeline is experiments/BUILD.py). One entry point traces every step:

    uv run python experiments/llama_steps.py --dry_run        # the plan: hit, or would run and why
    uv run python experiments/llama_steps.py                  # corpus -> ... -> report
    uv run python experiments/llama_steps.py --preset tiny    # the test size (seconds)

A second run runs nothing; a new learning rate reruns train_llama, eval and report; a comment in
one of experiments/steps/*.py reruns that step only (its outputs are the same bytes, so early
cutoff stops there).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the workspace root is what modules import from
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mbuild import StepRef, executor_main, step
from experiments.steps.corpus import corpus
from experiments.steps.evaluate import eval_llama
from experiments.steps.report import report
from experiments.steps.tokenize import tokens
from experiments.steps.tokenizer import tokenizer
from experiments.steps.train import train_llama
from mllib.config import LlamaConfig, TrainConfig
from mllib.presets import PRESETS, Preset

# The sizes of experiments/BUILD.py (under 5 minutes cold on 2 cores).
DEFAULT = Preset(
    name="default", corpus_max_bytes=None, val_fraction=0.05, split_seed=0, vocab_size=4096, shard_tokens=1 << 20,
    model=LlamaConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, d_ff=352, seq_len=128),
    train=TrainConfig(steps=300, batch_size=32, learning_rate=3e-3, warmup_steps=30, seed=0),
    eval_batch_size=32, eval_max_windows=None,
)


@step(name="llama/{name}")
def llama(name: str, preset: Preset) -> list[StepRef]:
    """The whole pipeline for one preset; its steps are the ones it returns and everything they read."""
    text = corpus("shakespeare", "experiments/data/shakespeare.txt.xz", preset.val_fraction, preset.split_seed, preset.corpus_max_bytes)
    tok = tokenizer(text, preset.vocab_size)
    data = tokens(text, tok, preset.shard_tokens)
    model = train_llama(data, preset.model, preset.train)
    scores = eval_llama(model, data, preset.eval_batch_size, preset.eval_max_windows)
    return [report(model, scores, f"Llama on Shakespeare ({preset.name} preset)")]


def preset_from_argv(argv: list[str]) -> tuple[Preset, list[str]]:
    """`--preset NAME` (default, tiny or small), taken out of the arguments executor_main reads."""
    if "--preset" in argv:
        i = argv.index("--preset")
        name = argv[i + 1] if i + 1 < len(argv) else ""
        presets = {"default": DEFAULT, **PRESETS}
        if name not in presets:
            sys.exit(f"error: --preset {name!r}: choose one of {', '.join(presets)}")
        return presets[name], argv[:i] + argv[i + 2 :]
    return DEFAULT, argv


if __name__ == "__main__":
    chosen, rest = preset_from_argv(sys.argv[1:])
    sys.argv[1:] = rest
    executor_main(steps=[llama(chosen.name, chosen)], description=__doc__)
