"""LeViT's convolutional feed-forward block: 1x1 conv, Hardswish, 1x1 conv."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import Conv
from vit_layers_flax.typing import Array, Dtype


class FeedForward(nn.Module):
    """``(batch, H, W, dim) -> (batch, H, W, dim)``: ``fc1`` (1x1 conv to ``dim * mult``),
    Hardswish, dropout, ``fc2`` (1x1 conv back to ``dim``), dropout.

    No normalisation and no residual (the block adds it). Parameters ``fc1`` and ``fc2``
    are the reference's ``net.0`` and ``net.3``. Dropout acts only when ``train=True``
    (rng stream ``'dropout'``).
    """

    dim: int
    mult: int
    dropout: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        conv = dict(kernel_size=(1, 1), dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(self.dim * self.mult, name="fc1", **conv)(x)
        x = nn.hard_swish(x)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = Conv(self.dim, name="fc2", **conv)(x)
        return nn.Dropout(self.dropout)(x, deterministic=not train)
