"""NesT's classification head: channel LayerNorm per position, spatial mean, then Linear."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import ChanLayerNorm
from vit_layers_flax.typing import Array, Dtype


class PooledHead(nn.Module):
    """``ChanLayerNorm -> mean over (H, W) -> Dense(num_classes)``.

    ``(batch, H, W, dim) -> (batch, num_classes)``: the reference's ``mlp_head =
    Sequential(LayerNorm(dim), Reduce('b c h w -> b c', 'mean'), Linear(dim, num_classes))``.
    The norm acts on every position *before* the mean, so this is not
    :class:`vit_layers_flax.MlpHead` (mean, then LayerNorm). Parameters ``norm``
    (``mlp_head.0``) and ``fc`` (``mlp_head.2``).
    """

    num_classes: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ChanLayerNorm(name="norm", **dtypes)(x)
        return nn.Dense(self.num_classes, name="fc", **dtypes)(x.mean(axis=(1, 2)))
