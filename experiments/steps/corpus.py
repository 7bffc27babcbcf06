"""Stage: the raw text split into train.txt and val.txt."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mbuild import deferred, output, step

ROOT = Path(__file__).resolve().parents[2]  # the workspace: sources are named relative to it


@dataclass(frozen=True)
class CorpusConfig:
    source: str  # workspace-relative path of the text
    source_digest: str  # its content, so that a new text reruns the step
    val_fraction: float
    seed: int
    max_bytes: int | None
    output_path: str


def prepare(config: CorpusConfig) -> dict:
    from mllib.corpus import prepare_corpus

    return prepare_corpus(ROOT / config.source, Path(config.output_path), config.val_fraction, config.seed, max_bytes=config.max_bytes)


prepare_step = deferred(prepare)


@step(name="corpus/{name}")
def corpus(name: str, source: str, val_fraction: float, seed: int, max_bytes: int | None = None):
    digest = hashlib.sha256((ROOT / source).read_bytes()).hexdigest()
    return prepare_step(CorpusConfig(source, digest, val_fraction, seed, max_bytes, output()))
