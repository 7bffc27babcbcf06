"""Rule: a markdown report with the loss curve and the eval numbers."""

from mbuild import ActionContext, attr, rule
from rules.llm.places import readable


@rule(
    attrs={
        "train": attr.label(doc="A train_llama target (its metrics.jsonl)."),
        "eval": attr.label(doc="An eval_llama target (its returned numbers)."),
        "title": attr.string(default="Llama training report"),
    },
    outputs=["report.md", "loss.png"],
)
def llama_report(ctx: ActionContext):
    """Write report.md and loss.png (matplotlib)."""
    from mllib.report import write_report
    from mllib.train import METRICS_NAME

    return write_report(readable(ctx, ctx.inputs.train) / METRICS_NAME, ctx.values.eval, ctx.out, ctx.attr.title)
