"""The whole pipeline as one macro: six targets named corpus, tokenizer, tokens, train_llama, eval, report."""

from mllib.presets import Preset

from .corpus import text_corpus
from .evaluate import eval_llama
from .report import llama_report
from .tokenize import tokenize
from .tokenizer import bpe_tokenizer
from .train import train_llama


def llama_pipeline(preset: Preset, corpus: str, title: str | None = None, in_place: bool = False) -> None:
    """Declare the pipeline for one preset in the calling BUILD file's package. With `in_place`, the
    token shards and the trained checkpoint are written in place under [outputs].prefix."""
    text_corpus(name="corpus", src=corpus, val_fraction=preset.val_fraction, seed=preset.split_seed, max_bytes=preset.corpus_max_bytes)
    bpe_tokenizer(name="tokenizer", corpus=":corpus", vocab_size=preset.vocab_size)
    tokenize(name="tokens", corpus=":corpus", tokenizer=":tokenizer", shard_tokens=preset.shard_tokens, in_place=in_place)
    train_llama(name="train_llama", data=":tokens", model=preset.model, train=preset.train, in_place=in_place)
    eval_llama(name="eval", model=":train_llama", data=":tokens", batch_size=preset.eval_batch_size, max_windows=preset.eval_max_windows)
    llama_report(name="report", train=":train_llama", eval=":eval", title=title or f"Llama on Shakespeare ({preset.name} preset)")
