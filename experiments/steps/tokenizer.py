"""Stage: a byte-level BPE tokenizer trained on the corpus's training split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mbuild import StepRef, deferred, output, step


@dataclass(frozen=True)
class TokenizerConfig:
    train_txt: object  # a path (a StepRef while tracing)
    vocab_size: int
    output_path: object


def train(config: TokenizerConfig) -> dict:
    from mllib.tokenizer import train_tokenizer

    Path(config.output_path).mkdir(parents=True, exist_ok=True)
    return train_tokenizer(Path(config.train_txt), config.vocab_size, Path(config.output_path) / "tokenizer.json")


train_step = deferred(train)


@step(name="tokenizer/{vocab_size}")
def tokenizer(corpus: StepRef, vocab_size: int):
    return train_step(TokenizerConfig(corpus / "train.txt", vocab_size, output()))
