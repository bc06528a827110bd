"""Block aggregation between hierarchies: 3x3 convolution, LayerNorm, 3x3 max-pool."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax import Conv, Layer, LayerNorm
from vit_layers_flax.typing import Array


class Aggregate(Layer):
    """``conv`` (3x3, padding 1) -> LayerNorm ``norm`` over channels -> max-pool 3x3, stride 2, padding 1.

    ``(batch, H, W, dim) -> (batch, ceil(H / 2), ceil(W / 2), dim_out)``: the reference's
    ``Aggregate(dim, dim_out)`` (``.0`` and ``.1``). The pooling pads with ``-inf``, as
    ``torch.nn.MaxPool2d`` does, so a border output is the maximum of real values only.
    """

    dim_out: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(self.dim_out, 3, padding=1, name="conv", **dtypes)(x)
        x = LayerNorm(name="norm", **dtypes)(x)
        # flax's max_pool pads with its initial value, -inf
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
