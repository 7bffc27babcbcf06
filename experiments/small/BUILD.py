"""The same rules scaled up: 8 layers, d_model 384, 8k vocabulary, 5000 steps (hours on a CPU; meant for a cluster)."""

from mllib.presets import SMALL
from rules.llm import llama_pipeline

llama_pipeline(SMALL, corpus="//experiments:data/shakespeare.txt.xz")
