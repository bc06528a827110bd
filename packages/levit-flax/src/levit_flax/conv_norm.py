"""A 1x1 convolution followed by BatchNorm: LeViT's projections (``Sequential(Conv2d(.., 1), BatchNorm2d)``)."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax import BatchNorm, Conv, Layer
from vit_layers_flax.typing import Array


class ConvNorm(Layer):
    """A 1x1 :class:`~vit_layers_flax.Conv` (``conv``), then :class:`~vit_layers_flax.BatchNorm` (``norm``).

    ``(batch, H, W, C) -> (batch, H', W', features)``; with ``strides=2`` the convolution
    keeps the pixels at even positions, so ``H' = ceil(H / 2)``, as torch's strided 1x1
    ``Conv2d``. ``zero_init_norm`` starts the norm's scale at zero, as the reference does for
    the attention's output.
    """

    features: int
    strides: int = 1
    use_bias: bool = False
    zero_init_norm: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = Conv(self.features, 1, strides=self.strides, use_bias=self.use_bias, name="conv", **dtypes)
        scale_init = nn.initializers.zeros if self.zero_init_norm else nn.initializers.ones
        return BatchNorm(scale_init=scale_init, name="norm", **dtypes)(conv(x), train=train)
