"""Rules for a language-model pipeline: corpus -> tokenizer -> tokens -> training -> eval -> report.

Each rule wires one stage of `mllib` (pure library code) into the build. Each lives in its own
module, so editing one rule's code reruns only its actions. The rules import the ML libraries
inside their implementations: loading BUILD files never imports JAX.
"""

from .corpus import text_corpus
from .evaluate import eval_llama
from .pipeline import llama_pipeline
from .report import llama_report
from .tokenize import tokenize
from .tokenizer import bpe_tokenizer
from .train import train_llama

__all__ = ["bpe_tokenizer", "eval_llama", "llama_pipeline", "llama_report", "text_corpus", "tokenize", "train_llama"]
