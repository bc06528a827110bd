"""Stochastic layer dropping (LayerDrop), as CaiT's ``dropout_layers``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vit_layers_flax.typing import Array


def layer_keep_mask(rng: Array, num_layers: int, rate: float) -> Array:
    """``-> (num_layers,)`` bool: which residual branches run in this training step.

    Each layer is dropped with probability ``rate``; if all would be dropped, one chosen
    uniformly at random is kept (the reference's rule). Traced, so it works under jit:
    multiply each residual branch by its flag instead of skipping it in Python.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"layer dropout rate must be in [0, 1), received {rate}")
    drop_rng, keep_rng = jax.random.split(rng)
    keep = jax.random.uniform(drop_rng, (num_layers,)) >= rate
    rescue = jax.nn.one_hot(jax.random.randint(keep_rng, (), 0, num_layers), num_layers, dtype=bool)
    return jnp.where(keep.any(), keep, rescue)
