"""Block aggregation between hierarchies: 3x3 convolution, channel LayerNorm, 3x3 max-pool."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import ChanLayerNorm
from vit_layers_flax.typing import Array, Dtype


class Aggregate(nn.Module):
    """``Conv 3x3 (padding 1) -> ChanLayerNorm -> max-pool 3x3, stride 2, padding 1``.

    ``(batch, H, W, dim) -> (batch, ceil(H / 2), ceil(W / 2), dim_out)``: the reference's
    ``Aggregate(dim, dim_out)``, on NHWC. The pooling pads with ``-inf`` (as
    ``torch.nn.MaxPool2d`` does), so a border output is the maximum of real values only.
    Parameters ``conv`` and ``norm`` (the reference's ``.0`` and ``.1``).
    """

    dim_out: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Conv(self.dim_out, (3, 3), padding=((1, 1), (1, 1)), name="conv", **dtypes)(x)
        x = ChanLayerNorm(name="norm", **dtypes)(x)
        # flax's max_pool pads with its initial value, -inf
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
