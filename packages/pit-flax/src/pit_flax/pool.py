"""PiT's pooling layer: a depthwise-separable strided convolution on the token grid."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Conv, Dense, DepthwiseConv, Layer
from vit_layers_flax.typing import Array


class Pool(Layer):
    """Halve the token grid, double the width: ``(batch, k + s*s, dim) -> (batch, k + s'*s', 2*dim)``.

    The ``class_tokens`` first tokens (``k``: the class token, and a distillation token)
    go through a Dense ``cls_ff`` (``dim -> 2 * dim``); the other tokens, laid out as their
    ``s x s`` grid (row-major), through a 3x3, stride-2, padding-1 depthwise convolution
    with channel multiplier 2 (``depthwise``) and a 1x1 convolution (``pointwise``) to
    ``s' = ceil(s / 2)``: the reference's ``cls_ff``, ``downsample.net.0`` and
    ``downsample.net.1``. ``pointwise=False`` leaves out the 1x1 convolution: timm's (the
    original PiT's) ``Pooling``, whose ``fc`` and ``conv`` are ``cls_ff`` and ``depthwise``.
    """

    dim: int
    pointwise: bool = True
    class_tokens: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cls_token, tokens = x[:, : self.class_tokens], x[:, self.class_tokens :]
        cls_token = Dense(2 * self.dim, name="cls_ff", **dtypes)(cls_token)

        tokens = rearrange(tokens, "b (h w) c -> b h w c", h=math.isqrt(tokens.shape[1]))
        tokens = DepthwiseConv(2 * self.dim, 3, strides=2, padding=1, name="depthwise", **dtypes)(tokens)
        if self.pointwise:
            tokens = Conv(2 * self.dim, 1, name="pointwise", **dtypes)(tokens)
        tokens = rearrange(tokens, "b h w c -> b (h w) c")
        return jnp.concatenate([cls_token, tokens], axis=1)
