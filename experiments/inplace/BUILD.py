"""The tiny pipeline with its token shards and trained checkpoint in place: written by the actions
under [outputs].prefix (by default a directory in the cache, `<cache>/inplace/experiments/inplace/`;
set `prefix = "gs://bucket/path"` in WORKSPACE.toml to keep them in a bucket). See BUILD.md."""

from mllib.presets import TINY
from rules.llm import llama_pipeline

llama_pipeline(TINY, corpus="//experiments:data/shakespeare.txt.xz", title="Llama on Shakespeare (tiny preset, in place)", in_place=True)
