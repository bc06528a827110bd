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
    convolutions, as in the reference, unless ``pointwise_bias`` says otherwise for the
    pointwise one (the original CvT's projections: a depthwise convolution without bias, a
    linear projection with one).

    ``prefix`` tokens ``(batch, n, C)`` (a class token) skip the depthwise convolution and its
    BatchNorm and join the map before the pointwise projection, as in the original CvT: the
    output is then the ``(batch, n + H' * W', features)`` sequence, prefix first, the map
    row-major.
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    use_bias: bool = True
    pointwise_bias: bool | None = None

    @nn.compact
    def __call__(self, x: Array, *, prefix: Array | None = None, train: bool = False) -> Array:
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
        if prefix is not None:
            x = jnp.concatenate([prefix.astype(x.dtype), rearrange(x, "b h w c -> b (h w) c")], axis=1)
        pointwise_bias = self.use_bias if self.pointwise_bias is None else self.pointwise_bias
        return Dense(self.features, use_bias=pointwise_bias, name="pointwise", **dtypes)(x)


class ConvAttention(Layer):
    """vit-pytorch's ``cvt.Attention``, pre-norm: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Queries come from a stride-1 :class:`DepthwiseSeparableConv` (``to_q``), keys and values
    from one of stride ``kv_proj_stride`` (``to_kv``, keys then values), both of kernel
    ``proj_kernel`` (padding ``proj_kernel // 2``) without bias; the ``H * W`` queries attend
    to the ``H' * W'`` keys, and ``to_out`` (a pointwise convolution) projects back to ``dim``.

    The original CvT's attention (Microsoft's, Hugging Face's ``CvtSelfAttention``) is these
    options: ``qkv_bias`` (a bias on the pointwise projections of queries, keys and values),
    ``separate_kv`` (keys and values from projections of their own, ``to_k`` and ``to_v``, each
    with its depthwise convolution and BatchNorm, instead of the one ``to_kv``),
    ``full_dim_scale`` (the logits scaled by ``(heads * dim_head) ** -0.5``, the width's, instead
    of ``dim_head ** -0.5``) and ``grid``: the input is then ``(batch, n + h * w, dim)`` tokens,
    ``n`` class tokens before the ``grid = (h, w)`` map's, row-major; the class tokens skip the
    convolutions and join the queries, keys and values before their pointwise projections.
    """

    dim: int
    proj_kernel: int
    kv_proj_stride: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None
    qkv_bias: bool = False
    separate_kv: bool = False
    full_dim_scale: bool = False
    grid: tuple[int, int] | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head
        projection = functools.partial(
            DepthwiseSeparableConv,
            kernel_size=self.proj_kernel,
            padding=self.proj_kernel // 2,
            use_bias=False,
            pointwise_bias=self.qkv_bias,
            **dtypes,
        )

        x = LayerNorm(name="norm", **dtypes)(x)
        prefix = None
        if self.grid is not None:  # class tokens, then the map's
            height, width = self.grid
            prefix = x[:, : x.shape[1] - height * width]
            x = rearrange(x[:, prefix.shape[1] :], "b (x y) c -> b x y c", x=height, y=width)
        height = x.shape[1]
        q = projection(inner_dim, name="to_q")(x, prefix=prefix, train=train)
        if self.separate_kv:
            kv_projection = functools.partial(projection, inner_dim, strides=self.kv_proj_stride)
            k = kv_projection(name="to_k")(x, prefix=prefix, train=train)
            v = kv_projection(name="to_v")(x, prefix=prefix, train=train)
        else:
            kv = projection(2 * inner_dim, strides=self.kv_proj_stride, name="to_kv")(
                x, prefix=prefix, train=train
            )
            k, v = jnp.split(kv, 2, axis=-1)
        if self.full_dim_scale:  # the attention scales by dim_head ** -0.5: heads ** -0.5 more
            q = q * jnp.asarray(self.heads**-0.5, q.dtype)
        pattern = "b n (h d) -> b n h d" if prefix is not None else "b x y (h d) -> b (x y) h d"
        q, k, v = (rearrange(t, pattern, h=self.heads) for t in (q, k, v))
        out = DotProductAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)
        if prefix is not None:
            out = rearrange(out, "b n h d -> b n (h d)")
        else:
            out = rearrange(out, "b (x y) h d -> b x y (h d)", x=height)
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
