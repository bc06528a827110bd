"""PiT's pooling layer: a depthwise-separable strided convolution on the token grid."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Conv, Dense, DepthwiseConv, Layer
from vit_layers_flax.typing import Array


class Pool(Layer):
    """Halve the token grid, double the width: ``(batch, 1 + s*s, dim) -> (batch, 1 + s'*s', 2*dim)``.

    The class token (first token) goes through a Dense ``cls_ff`` (``dim -> 2 * dim``); the
    other tokens, laid out as their ``s x s`` grid (row-major), through a 3x3, stride-2,
    padding-1 depthwise convolution with channel multiplier 2 (``depthwise``) and a 1x1
    convolution (``pointwise``) to ``s' = ceil(s / 2)``: the reference's ``cls_ff``,
    ``downsample.net.0`` and ``downsample.net.1``.
    """

    dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cls_token, tokens = x[:, :1], x[:, 1:]
        cls_token = Dense(2 * self.dim, name="cls_ff", **dtypes)(cls_token)

        tokens = rearrange(tokens, "b (h w) c -> b h w c", h=math.isqrt(tokens.shape[1]))
        tokens = DepthwiseConv(2 * self.dim, 3, strides=2, padding=1, name="depthwise", **dtypes)(tokens)
        tokens = Conv(2 * self.dim, 1, name="pointwise", **dtypes)(tokens)
        tokens = rearrange(tokens, "b h w c -> b (h w) c")
        return jnp.concatenate([cls_token, tokens], axis=1)
