"""Configuration of the model and of training, as plain frozen dataclasses.

Kept apart from the JAX code so that BUILD files and rules can name configurations (they go into
action keys) without importing JAX.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture hyperparameters; hashable so it can be a static argument to `jax.jit`."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model must split into n_heads heads of even size")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyperparameters. The learning rate warms up linearly, then decays by cosine to min_lr_ratio * lr."""

    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float = 0.1
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50  # steps between progress checkpoints when train() has a work_dir (0: none)

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"need 0 <= warmup_steps < steps, got {self.warmup_steps} and {self.steps}")
        if self.checkpoint_every < 0:
            raise ValueError(f"need checkpoint_every >= 0 (0: no progress checkpoints), got {self.checkpoint_every}")
