"""LeViT's feed-forward on feature maps: 1x1 convolution, Hardswish, 1x1 convolution."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax import Conv, Layer
from vit_layers_flax.typing import Array


class HardswishFeedForward(Layer):
    """``fc1`` (1x1 conv to ``dim * mult``), Hardswish, dropout, ``fc2`` (1x1 conv to ``dim``), dropout.

    ``(batch, H, W, dim) -> (batch, H, W, dim)``; unlike the shared
    :class:`~vit_layers_flax.FeedForward` there is no norm in front (the BatchNorms of the
    attention take its place) and the activation is Hardswish. ``fc1`` and ``fc2`` are the
    reference's ``net.0`` and ``net.3``.
    """

    dim: int
    mult: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(self.dim * self.mult, 1, name="fc1", **dtypes)(x)
        x = nn.Dropout(self.dropout)(nn.hard_swish(x), deterministic=not train)
        x = Conv(self.dim, 1, name="fc2", **dtypes)(x)
        return nn.Dropout(self.dropout)(x, deterministic=not train)
