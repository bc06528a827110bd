"""CvT's depthwise-separable convolutional projection (depthwise conv -> BatchNorm -> pointwise)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import BatchNorm, Dense, depthwise_conv
from vit_layers_flax.typing import Array, Dtype


class DepthWiseConv2d(nn.Module):
    """vit-pytorch ``cvt.DepthWiseConv2d``: ``(batch, H, W, dim_in) -> (batch, H', W', dim_out)``.

    A ``kernel_size`` depthwise convolution with symmetric ``padding`` and ``stride``
    (``depthwise``, the reference's ``net.0``; ``H' = (H + 2 * padding - kernel_size) //
    stride + 1``), a :class:`vit_layers_flax.BatchNorm` over its ``dim_in`` channels
    (``bn``, ``net.1``) and a pointwise (1 x 1) convolution to ``dim_out`` channels, which on
    NHWC is a ``Dense`` on the channel axis (``pointwise``, ``net.2``). ``bias`` applies to
    both convolutions, as in the reference. BatchNorm uses batch statistics when
    ``train=True`` and the running averages otherwise.
    """

    dim_in: int
    dim_out: int
    kernel_size: int
    padding: int
    stride: int
    bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = depthwise_conv(
            self.dim_in,
            self.dim_in,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            use_bias=self.bias,
            name="depthwise",
            **dtypes,
        )(x)
        x = BatchNorm(name="bn", **dtypes)(x, train=train)
        return Dense(self.dim_out, use_bias=self.bias, name="pointwise", **dtypes)(x)
