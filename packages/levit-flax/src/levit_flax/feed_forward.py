"""LeViT's feed-forward on feature maps: 1x1 convolution, Hardswish, 1x1 convolution."""

from __future__ import annotations

import flax.linen as nn

from levit_flax.conv_norm import ConvNorm
from vit_layers_flax import Conv, Layer
from vit_layers_flax.typing import Array


class HardswishFeedForward(Layer):
    """``fc1`` (1x1 conv to ``dim * mult``), Hardswish, dropout, ``fc2`` (1x1 conv to ``dim``), dropout.

    ``(batch, H, W, dim) -> (batch, H, W, dim)``; unlike the shared
    :class:`~vit_layers_flax.FeedForward` there is no norm in front (the BatchNorms of the
    attention take its place) and the activation is Hardswish. ``fc1`` and ``fc2`` are the
    reference's ``net.0`` and ``net.3``. With ``norm`` (timm's ``LevitMlp``) each is a
    bias-free 1x1 convolution followed by BatchNorm (a :class:`~levit_flax.ConvNorm`, ``fc2``'s
    norm starting at zero, as timm's).
    """

    dim: int
    mult: int
    dropout: float = 0.0
    norm: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.norm:
            x = ConvNorm(self.dim * self.mult, name="fc1", **dtypes)(x, train=train)
        else:
            x = Conv(self.dim * self.mult, 1, name="fc1", **dtypes)(x)
        x = nn.Dropout(self.dropout)(nn.hard_swish(x), deterministic=not train)
        if self.norm:
            x = ConvNorm(self.dim, zero_init_norm=True, name="fc2", **dtypes)(x, train=train)
        else:
            x = Conv(self.dim, 1, name="fc2", **dtypes)(x)
        return nn.Dropout(self.dropout)(x, deterministic=not train)
