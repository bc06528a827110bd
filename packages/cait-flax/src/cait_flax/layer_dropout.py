"""Layer dropout (LayerDrop) as a traced mask: CaiT's ``dropout_layers``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vit_layers_flax.typing import Array


def layer_keep_mask(rng: Array, num_layers: int, rate: float) -> Array:
    """``-> (num_layers,)`` bool: which blocks of a stack run in this training step.

    Each block is dropped with probability ``rate``; if every block would be, one chosen
    uniformly at random is kept (the reference's rule). Traced, so it works under ``jit``:
    each block multiplies its residual branches by its flag instead of being skipped.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"layer dropout rate must be in [0, 1), received {rate}")
    drop_rng, rescue_rng = jax.random.split(rng)
    kept = jax.random.uniform(drop_rng, (num_layers,)) >= rate
    rescued = jax.nn.one_hot(jax.random.randint(rescue_rng, (), 0, num_layers), num_layers, dtype=bool)
    return jnp.where(kept.any(), kept, rescued)
