"""A 1x1 convolution followed by BatchNorm: LeViT's projections (``Sequential(Conv2d(.., 1), BatchNorm2d)``)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import BatchNorm, Conv
from vit_layers_flax.typing import Array, Dtype


class ConvNorm(nn.Module):
    """``(batch, H, W, C) -> (batch, H', W', features)``: a 1x1 :class:`vit_layers_flax.Conv`, then :class:`vit_layers_flax.BatchNorm`.

    With ``strides=2`` the convolution (no padding) keeps the pixels at even positions, so
    ``H' = ceil(H / 2)``, as torch's strided 1x1 ``Conv2d``. Parameters ``conv`` (the
    reference's ``.0``) and ``norm`` (``.1``, or ``.2`` in the attention's ``to_out``);
    ``zero_init_norm`` initialises the norm's scale to zero, as the reference does for the
    attention output. ``train=True`` normalises with batch statistics.
    """

    features: int
    strides: int = 1
    use_bias: bool = False
    zero_init_norm: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(
            self.features,
            kernel_size=(1, 1),
            stride=(self.strides, self.strides),
            use_bias=self.use_bias,
            name="conv",
            **dtypes,
        )(x)
        scale_init = nn.initializers.zeros if self.zero_init_norm else nn.initializers.ones
        return BatchNorm(scale_init=scale_init, name="norm", **dtypes)(x, train=train)
