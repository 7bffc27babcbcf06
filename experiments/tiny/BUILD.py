"""The same pipeline at a size that runs in seconds (what the tests build)."""

from mllib.presets import TINY
from rules.llm import llama_pipeline

llama_pipeline(TINY, corpus="//experiments:data/shakespeare.txt.xz")
