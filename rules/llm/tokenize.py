"""Rule: both splits of a corpus encoded into numpy token shards with a JSON index."""

from mbuild import ActionContext, attr, rule
from rules.llm.places import writable


@rule(
    attrs={
        "corpus": attr.label(doc="A text_corpus target."),
        "tokenizer": attr.label(doc="A bpe_tokenizer target."),
        "shard_tokens": attr.int(default=1 << 20, doc="Tokens per shard file."),
    },
    outputs=["index.json"],
)
def tokenize(ctx: ActionContext):
    """Encode train.txt and val.txt; returns the index (token counts per split)."""
    from mllib.shards import tokenize_splits

    splits = {"train": ctx.inputs.corpus / "train.txt", "val": ctx.inputs.corpus / "val.txt"}
    with writable(ctx) as out:  # ctx.out, or in place (BUILD.md: In-place outputs)
        index = tokenize_splits(ctx.inputs.tokenizer / "tokenizer.json", splits, out, ctx.attr.shard_tokens)
    return {"vocab_size": index["vocab_size"], "tokens": {name: s["tokens"] for name, s in index["splits"].items()}}
