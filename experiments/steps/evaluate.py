"""Stage: validation loss and perplexity of the trained model, next to a unigram baseline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mbuild import StepRef, deferred, output, step


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: object
    data: object
    batch_size: int
    max_windows: int | None
    output_path: object


def score(config: EvalConfig) -> dict:
    from mllib.evaluate import evaluate

    result = evaluate(Path(config.checkpoint), Path(config.data), config.batch_size, config.max_windows)
    Path(config.output_path).mkdir(parents=True, exist_ok=True)
    (Path(config.output_path) / "eval.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


score_step = deferred(score)
CHECKPOINT_DIR = "checkpoint"  # as mllib.train names it (not imported here: that loads JAX while tracing)


@step(name="eval")
def eval_llama(model: StepRef, data: StepRef, batch_size: int = 32, max_windows: int | None = None):
    return score_step(EvalConfig(model / CHECKPOINT_DIR, data, batch_size, max_windows, output()))
