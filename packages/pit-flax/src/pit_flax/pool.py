"""PiT's pooling layer: a depthwise-separable strided convolution on the token grid."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Conv, Dense, depthwise_conv
from vit_layers_flax.typing import Array, Dtype


class DepthWiseConv2d(nn.Module):
    """``depthwise -> pointwise``: ``(batch, H, W, dim_in) -> (batch, H', W', dim_out)``.

    The reference's ``DepthWiseConv2d``: a ``kernel_size`` convolution with
    ``groups=dim_in`` (each input channel gives ``dim_out // dim_in`` output channels,
    ``net.0``, here ``depthwise``), then a 1x1 convolution (``net.1``, here ``pointwise``).
    Padding is explicit and symmetric, as torch's.
    """

    dim_in: int
    dim_out: int
    kernel_size: int
    padding: int
    stride: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = depthwise_conv(
            self.dim_in,
            self.dim_out,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            use_bias=self.use_bias,
            name="depthwise",
            **dtypes,
        )(x)
        return Conv(self.dim_out, (1, 1), use_bias=self.use_bias, name="pointwise", **dtypes)(x)


class Pool(nn.Module):
    """Halve the token grid and double the width: ``(batch, 1 + s*s, dim) -> (batch, 1 + s'*s', 2*dim)``.

    The class token (first token) goes through a Dense ``cls_ff`` (``dim -> 2 * dim``); the
    other tokens are laid out as their square ``s x s`` grid (row-major, as the reference's
    ``'b (h w) c -> b c h w'``) and downsampled by a 3x3, stride-2, padding-1
    :class:`DepthWiseConv2d` (``downsample``) to ``s' = ceil(s / 2)``.
    """

    dim: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cls_token, tokens = x[:, :1], x[:, 1:]
        cls_token = Dense(2 * self.dim, name="cls_ff", **dtypes)(cls_token)

        tokens = rearrange(tokens, "b (h w) c -> b h w c", h=math.isqrt(tokens.shape[1]))
        tokens = DepthWiseConv2d(
            self.dim, 2 * self.dim, kernel_size=3, padding=1, stride=2, name="downsample", **dtypes
        )(tokens)
        tokens = rearrange(tokens, "b h w c -> b (h w) c")
        return jnp.concatenate([cls_token, tokens], axis=1)
