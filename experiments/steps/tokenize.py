"""Stage: both splits of the corpus encoded into numpy token shards with a JSON index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mbuild import StepRef, deferred, output, step


@dataclass(frozen=True)
class TokenizeConfig:
    corpus: object
    tokenizer_json: object
    shard_tokens: int
    output_path: object


def encode(config: TokenizeConfig) -> dict:
    from mllib.shards import tokenize_splits

    corpus = Path(config.corpus)
    splits = {"train": corpus / "train.txt", "val": corpus / "val.txt"}
    index = tokenize_splits(Path(config.tokenizer_json), splits, Path(config.output_path), config.shard_tokens)
    return {"vocab_size": index["vocab_size"], "tokens": {name: s["tokens"] for name, s in index["splits"].items()}}


encode_step = deferred(encode)


@step(name="tokens")
def tokens(corpus: StepRef, tokenizer: StepRef, shard_tokens: int):
    return encode_step(TokenizeConfig(corpus, tokenizer / "tokenizer.json", shard_tokens, output()))
