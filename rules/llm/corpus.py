"""Rule: a text corpus split into train.txt and val.txt."""

from mbuild import ActionContext, attr, rule


@rule(
    attrs={
        "src": attr.label(doc="The raw text (plain, .gz or .xz)."),
        "val_fraction": attr.float(default=0.05, doc="Share of paragraph chunks held out for validation."),
        "seed": attr.int(default=0, doc="Seed of the train/validation split."),
        "max_bytes": attr.int(default=None, doc="Use only this many bytes of the text (None: all of it)."),
    },
    outputs=["train.txt", "val.txt"],
)
def text_corpus(ctx: ActionContext):
    """Split a text into train and validation parts by whole paragraph chunks, reproducibly."""
    from mllib.corpus import prepare_corpus

    return prepare_corpus(ctx.inputs.src, ctx.out, ctx.attr.val_fraction, ctx.attr.seed, max_bytes=ctx.attr.max_bytes)
