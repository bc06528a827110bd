"""A convolution followed by BatchNorm: LeViT's projections (``Sequential(Conv2d(.., 1), BatchNorm2d)``,
timm's ``ConvNorm``/``LinearNorm``)."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax import BatchNorm, Conv, Layer
from vit_layers_flax.typing import Array


class ConvNorm(Layer):
    """A :class:`~vit_layers_flax.Conv` (``conv``), then :class:`~vit_layers_flax.BatchNorm` (``norm``).

    ``(batch, H, W, C) -> (batch, H', W', features)``; a 1x1 convolution by default, where
    ``strides=2`` keeps the pixels at even positions, so ``H' = ceil(H / 2)``, as torch's
    strided 1x1 ``Conv2d`` (and timm's subsampling of the queries). ``kernel_size`` and
    ``padding`` give timm's stem convolutions (3x3, padding 1). ``zero_init_norm`` starts the
    norm's scale at zero, as the references do for the branches that end a residual.
    """

    features: int
    strides: int = 1
    use_bias: bool = False
    zero_init_norm: bool = False
    kernel_size: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            use_bias=self.use_bias,
            name="conv",
            **dtypes,
        )
        scale_init = nn.initializers.zeros if self.zero_init_norm else nn.initializers.ones
        return BatchNorm(scale_init=scale_init, name="norm", **dtypes)(conv(x), train=train)
