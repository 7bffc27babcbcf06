"""Rule: train a small Llama on token shards. Remote-tagged: it asks for resources."""

from mbuild import ActionContext, attr, rule
from mllib.config import LlamaConfig, TrainConfig


@rule(
    attrs={
        "data": attr.label(doc="A tokenize target."),
        "model": attr.value(type=LlamaConfig, doc="Architecture: sizes, heads, sequence length."),
        "train": attr.value(type=TrainConfig, doc="Optimisation: steps, batch, learning rate, schedule, seed."),
    },
    outputs=["checkpoint/", "metrics.jsonl"],
    resources={"cpu": 2, "ram": "4g", "disk": "2g"},
)
def train_llama(ctx: ActionContext):
    """Train with JAX + optax on the CPU; writes checkpoint/ (params.npz, config.json) and metrics.jsonl."""
    from mllib.train import train

    return train(ctx.attr.model, ctx.attr.train, ctx.inputs.data, ctx.out, log=ctx.log)
