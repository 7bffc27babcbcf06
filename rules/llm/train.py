"""Rule: train a small Llama on token shards. Remote-tagged (it asks for resources) and resumable: it
saves a progress checkpoint in ctx.work every train.checkpoint_every steps, and a later attempt
resumes from the newest complete one, to outputs byte-identical to an uninterrupted run."""

from mbuild import ActionContext, attr, rule
from rules.llm.places import readable, writable
from mllib.config import LlamaConfig, TrainConfig


@rule(
    attrs={
        "data": attr.label(doc="A tokenize target."),
        "model": attr.value(type=LlamaConfig, doc="Architecture: sizes, heads, sequence length."),
        "train": attr.value(type=TrainConfig, doc="Optimisation: steps, batch, learning rate, schedule, seed."),
    },
    outputs=["checkpoint/", "metrics.jsonl"],
    resources={"cpu": 2, "ram": "4g", "disk": "2g"},
    resumable=True,
)
def train_llama(ctx: ActionContext):
    """Train with JAX + optax on the CPU; writes checkpoint/ (params.npz, config.json) and metrics.jsonl.

    Reports each step's loss and tokens/s through ctx.progress (shown live by the build). Logs
    `resuming from step N` when it continues an earlier attempt (a target with resumable=False
    has no ctx.work, and always starts from step 0)."""
    from mllib.train import train

    with writable(ctx) as out:  # ctx.out, or in place (BUILD.md: In-place outputs)
        return train(ctx.attr.model, ctx.attr.train, readable(ctx, ctx.inputs.data), out, log=ctx.log, work_dir=ctx.work, on_progress=ctx.progress)
