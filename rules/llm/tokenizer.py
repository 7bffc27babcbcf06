"""Rule: a byte-level BPE tokenizer trained on a corpus's training split."""

from mbuild import ActionContext, attr, rule


@rule(
    attrs={
        "corpus": attr.label(doc="A text_corpus target."),
        "vocab_size": attr.int(doc="Vocabulary size, special tokens included."),
    },
    outputs=["tokenizer.json"],
)
def bpe_tokenizer(ctx: ActionContext):
    """Train the tokenizer with HF tokenizers (deterministic: same text, same bytes)."""
    from mllib.tokenizer import train_tokenizer

    return train_tokenizer(ctx.inputs.corpus / "train.txt", ctx.attr.vocab_size, ctx.out / "tokenizer.json")
