"""Stage 4: a small Llama-style decoder in JAX (RMSNorm, RoPE, SwiGLU, causal MHA, tied embeddings).

Parameters are a plain nested dict of arrays; the per-layer weights are stacked along a leading
layer axis so the blocks run under `lax.scan` (compile time does not grow with depth).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mllib.config import LlamaConfig

Params = dict[str, Any]




def init_params(cfg: LlamaConfig, key: jax.Array) -> Params:
    """Random init: N(0, init_std) weights, residual output projections scaled by 1/sqrt(2L), unit norms."""
    L, D, F = cfg.n_layers, cfg.d_model, cfg.d_ff
    k_embed, *k = jax.random.split(key, 8)
    out_std = cfg.init_std / math.sqrt(2 * L)

    def normal(k: jax.Array, shape: tuple[int, ...], std: float) -> jax.Array:
        return std * jax.random.normal(k, shape, jnp.float32)

    return {
        "embed": normal(k_embed, (cfg.vocab_size, D), cfg.init_std),
        "layers": {
            "attn_norm": jnp.ones((L, D), jnp.float32),
            "wq": normal(k[0], (L, D, D), cfg.init_std),
            "wk": normal(k[1], (L, D, D), cfg.init_std),
            "wv": normal(k[2], (L, D, D), cfg.init_std),
            "wo": normal(k[3], (L, D, D), out_std),
            "mlp_norm": jnp.ones((L, D), jnp.float32),
            "w_gate": normal(k[4], (L, D, F), cfg.init_std),
            "w_up": normal(k[5], (L, D, F), cfg.init_std),
            "w_down": normal(k[6], (L, F, D), out_std),
        },
        "final_norm": jnp.ones((D,), jnp.float32),
    }


def count_params(params: Params) -> int:
    """Total number of scalar parameters."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm: scale by the inverse root-mean-square over the feature axis (no mean subtraction)."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """Cosine and sine tables of shape (seq_len, head_dim // 2) for rotary embeddings."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate (batch, seq, heads, head_dim) features pairwise (half-split layout, as in Llama/NeoX)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def attention(x: jax.Array, layer: Params, cfg: LlamaConfig, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Causal multi-head self-attention with rotary position embeddings on queries and keys."""
    B, T, D = x.shape
    heads = (B, T, cfg.n_heads, cfg.head_dim)
    q = apply_rope((x @ layer["wq"]).reshape(heads), cos, sin)
    k = apply_rope((x @ layer["wk"]).reshape(heads), cos, sin)
    v = (x @ layer["wv"]).reshape(heads)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.head_dim)
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    return out.reshape(B, T, D) @ layer["wo"]


def swiglu(x: jax.Array, layer: Params) -> jax.Array:
    """SwiGLU feed-forward: (silu(x W_gate) * x W_up) W_down."""
    return (jax.nn.silu(x @ layer["w_gate"]) * (x @ layer["w_up"])) @ layer["w_down"]


def forward(params: Params, tokens: jax.Array, cfg: LlamaConfig) -> jax.Array:
    """Logits of shape (batch, seq, vocab) for int tokens of shape (batch, seq), seq <= cfg.seq_len."""
    cos, sin = rope_tables(tokens.shape[1], cfg.head_dim, cfg.rope_theta)

    def block(x: jax.Array, layer: Params) -> tuple[jax.Array, None]:
        x = x + attention(rms_norm(x, layer["attn_norm"], cfg.norm_eps), layer, cfg, cos, sin)
        x = x + swiglu(rms_norm(x, layer["mlp_norm"], cfg.norm_eps), layer)
        return x, None

    x, _ = jax.lax.scan(block, params["embed"][tokens], params["layers"])
    return rms_norm(x, params["final_norm"], cfg.norm_eps) @ params["embed"].T


def token_losses(params: Params, batch: jax.Array, cfg: LlamaConfig) -> jax.Array:
    """Next-token cross-entropy (nats) per position for windows of shape (batch, seq + 1)."""
    logits = forward(params, batch[:, :-1], cfg)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:])


def loss_fn(params: Params, batch: jax.Array, cfg: LlamaConfig) -> jax.Array:
    """Mean next-token cross-entropy over a batch of windows."""
    return jnp.mean(token_losses(params, batch, cfg))
