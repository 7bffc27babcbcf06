"""Pure library functions for the example ML pipeline: corpus, tokenizer, shards, model, train, eval, report.

Modules are imported individually (e.g. `from mllib.train import train`) so that light stages
such as the corpus split never pay for importing JAX.
"""
