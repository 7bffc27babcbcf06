"""Stage 3: encode text splits into numpy token shards with a JSON index, and read them back."""

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

INDEX_NAME = "index.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every token id."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """Encode text line by line (batched, parallel in Rust) into one flat id list.

    Lines keep their newline, so no byte is lost; a token never spans a line break, which
    parallelises encoding and keeps it deterministic.
    """
    encodings = tokenizer.encode_batch(text.splitlines(keepends=True), add_special_tokens=False)
    return [i for e in encodings for i in e.ids]


def tokenize_splits(tokenizer_json: Path, splits: dict[str, Path], out_dir: Path, shard_tokens: int) -> dict:
    """Encode each split's text into `<split>_<k>.npy` shards of at most `shard_tokens` tokens.

    Writes and returns the index: {"dtype", "vocab_size", "splits": {name: {"tokens", "bytes", "shards": [{"file", "tokens"}]}}}.
    """
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict = {"dtype": dtype.name, "vocab_size": vocab_size, "splits": {}}
    for name in sorted(splits):
        text = splits[name].read_text(encoding="utf-8")
        ids = np.asarray(encode_text(tokenizer, text), dtype=dtype)
        shards = []
        for k, start in enumerate(range(0, max(len(ids), 1), shard_tokens)):
            file = f"{name}_{k:05d}.npy"
            np.save(out_dir / file, ids[start : start + shard_tokens], allow_pickle=False)
            shards.append({"file": file, "tokens": min(shard_tokens, len(ids) - start)})
        index["splits"][name] = {"tokens": len(ids), "bytes": len(text.encode("utf-8")), "shards": shards}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return index


def read_index(data_dir: Path) -> dict:
    """Load the shard index written by `tokenize_splits`."""
    return json.loads((data_dir / INDEX_NAME).read_text(encoding="utf-8"))


def read_split(data_dir: Path, split: str) -> np.ndarray:
    """Concatenate one split's shards into a single token array (dtype as stored)."""
    meta = read_index(data_dir)["splits"][split]
    parts = [np.load(data_dir / s["file"], allow_pickle=False) for s in meta["shards"]]
    return np.concatenate(parts)
