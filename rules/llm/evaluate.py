"""Rule: validation loss and perplexity of a trained model, next to a unigram baseline."""

import json

from mbuild import ActionContext, attr, rule
from rules.llm.places import readable


@rule(
    attrs={
        "model": attr.label(doc="A train_llama target."),
        "data": attr.label(doc="The tokenize target it was trained on."),
        "batch_size": attr.int(default=32),
        "max_windows": attr.int(default=None, doc="Evaluate only the first N windows (None: the whole split)."),
    },
    outputs=["eval.json"],
)
def eval_llama(ctx: ActionContext):
    """Score the final checkpoint on the validation split; the numbers are the returned value too."""
    from mllib.evaluate import evaluate
    from mllib.train import CHECKPOINT_DIR

    model, data = readable(ctx, ctx.inputs.model), readable(ctx, ctx.inputs.data)
    result = evaluate(model / CHECKPOINT_DIR, data, ctx.attr.batch_size, ctx.attr.max_windows)
    (ctx.out / "eval.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
