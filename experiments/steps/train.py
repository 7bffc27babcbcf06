"""Stage: train a small Llama on the token shards (JAX on the CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mbuild import StepRef, deferred, output, step
from mllib.config import LlamaConfig, TrainConfig


@dataclass(frozen=True)
class TrainLlamaConfig:
    data: object
    model: LlamaConfig
    train: TrainConfig
    output_path: object


def run(config: TrainLlamaConfig) -> dict:
    from mllib.train import train

    return train(config.model, config.train, Path(config.data), Path(config.output_path), log=print)


run_step = deferred(run)


@step(name="train_llama")
def train_llama(data: StepRef, model: LlamaConfig, train: TrainConfig):
    return run_step(TrainLlamaConfig(data, model, train, output()))
