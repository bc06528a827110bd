"""CvT's convolutional attention: queries, keys and values from depthwise-separable convolutions."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import BatchNorm, Dense, DepthwiseConv, DotProductAttention, Layer, LayerNorm
from vit_layers_flax.typing import Array


class DepthwiseSeparableConv(Layer):
    """vit-pytorch's ``cvt.DepthWiseConv2d``: ``(batch, H, W, C) -> (batch, H', W', features)``.

    A depthwise convolution (``depthwise``, the reference's ``net.0``), a BatchNorm over its
    channels (``bn``, ``net.1``) and a pointwise convolution to ``features`` channels, a
    ``Dense`` on the channel axis (``pointwise``, ``net.2``); ``use_bias`` applies to both
    convolutions, as in the reference.
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = DepthwiseConv(
            x.shape[-1],
            self.kernel_size,
            self.strides,
            self.padding,
            self.use_bias,
            name="depthwise",
            **dtypes,
        )
        x = BatchNorm(name="bn", **dtypes)(conv(x), train=train)
        return Dense(self.features, use_bias=self.use_bias, name="pointwise", **dtypes)(x)


class ConvAttention(Layer):
    """vit-pytorch's ``cvt.Attention``, pre-norm: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Queries come from a stride-1 :class:`DepthwiseSeparableConv` (``to_q``), keys and values
    from one of stride ``kv_proj_stride`` (``to_kv``, keys then values), both of kernel
    ``proj_kernel`` (padding ``proj_kernel // 2``) without bias; the ``H * W`` queries attend
    to the ``H' * W'`` keys, and ``to_out`` (a pointwise convolution) projects back to ``dim``.
    """

    dim: int
    proj_kernel: int
    kv_proj_stride: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        height = x.shape[1]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head
        projection = functools.partial(
            DepthwiseSeparableConv,
            kernel_size=self.proj_kernel,
            padding=self.proj_kernel // 2,
            use_bias=False,
            **dtypes,
        )

        x = LayerNorm(name="norm", **dtypes)(x)
        q = projection(inner_dim, name="to_q")(x, train=train)
        kv = projection(2 * inner_dim, strides=self.kv_proj_stride, name="to_kv")(x, train=train)
        k, v = jnp.split(kv, 2, axis=-1)
        q, k, v = (rearrange(t, "b x y (h d) -> b (x y) h d", h=self.heads) for t in (q, k, v))
        out = DotProductAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)
        out = rearrange(out, "b (x y) h d -> b x y (h d)", x=height)
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
