"""A small Llama trained on Shakespeare, on the CPU, from raw text to a report.

    mbuild //experiments:train_llama     # corpus -> tokenizer -> tokens -> train_llama
    mbuild //experiments:report          # ... -> eval -> report

This file is the one place the pipeline's data and sizes are chosen: change a number here and
only the actions it reaches rerun (a learning rate reruns train_llama, eval and report; a
vocabulary size reruns everything from the tokenizer on). Whole cold run: under 5 minutes on
2 cores. experiments/tiny and experiments/small declare the same pipeline at other sizes.
"""

from mllib.config import LlamaConfig, TrainConfig
from rules.llm import bpe_tokenizer, eval_llama, llama_report, text_corpus, tokenize, train_llama

VOCAB = 4096

text_corpus(name="corpus", src="data/shakespeare.txt.xz", val_fraction=0.05, seed=0)

bpe_tokenizer(name="tokenizer", corpus=":corpus", vocab_size=VOCAB)

tokenize(name="tokens", corpus=":corpus", tokenizer=":tokenizer")

train_llama(
    name="train_llama",
    data=":tokens",
    model=LlamaConfig(vocab_size=VOCAB, d_model=128, n_layers=4, n_heads=4, d_ff=352, seq_len=128),
    train=TrainConfig(steps=300, batch_size=32, learning_rate=3e-3, warmup_steps=30, seed=0),
)

eval_llama(name="eval", model=":train_llama", data=":tokens")

llama_report(name="report", train=":train_llama", eval=":eval", title="Llama on Shakespeare (default)")
