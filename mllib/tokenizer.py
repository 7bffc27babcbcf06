"""Stage 2: train a byte-level BPE tokenizer (HF `tokenizers`) on the training text."""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(train_txt: Path, vocab_size: int, out_path: Path, min_frequency: int = 2) -> dict:
    """Train a GPT-2 style byte-level BPE of at most `vocab_size` tokens and save it as JSON.

    Byte-level means every byte sequence is encodable (no unknown tokens). Training is
    deterministic: the same text and parameters give a byte-identical tokenizer.json.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(train_txt)], trainer)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_path))
    merges = json.loads(out_path.read_text(encoding="utf-8"))["model"]["merges"]
    return {"vocab_size": tokenizer.get_vocab_size(), "merges": len(merges)}
