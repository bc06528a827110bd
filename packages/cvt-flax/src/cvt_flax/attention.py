"""CvT's convolutional attention: queries, keys and values from depthwise-separable convolutions."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from cvt_flax.depthwise_separable import DepthWiseConv2d
from vit_layers_flax import ChanLayerNorm, Dense, apply_attention, attention_weights
from vit_layers_flax.typing import Array, Dtype


class ConvAttention(nn.Module):
    """Pre-norm multi-head attention over a feature map, as vit-pytorch's ``cvt.Attention``.

    ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    The map is normalised over channels (``norm``, a channel LayerNorm with ``g``/``b``);
    queries come from a stride-1 :class:`~cvt_flax.depthwise_separable.DepthWiseConv2d`
    (``to_q``), keys and values from one with stride ``kv_proj_stride`` (``to_kv``, its
    ``2 * heads * dim_head`` channels split into keys then values), both with kernel
    ``proj_kernel``, padding ``proj_kernel // 2`` and no bias. The ``H * W`` query tokens
    (row-major) attend to the ``H' * W'`` key tokens; the result is laid back out as a
    map and projected to ``dim`` by a pointwise convolution (``to_out``, a ``Dense`` on the
    channel axis, with bias). In evaluation (or without dropout) the attention is
    :func:`jax.nn.dot_product_attention` (``implementation``: ``None``, ``'xla'`` or
    ``'cudnn'``); with dropout in training the weights are computed explicitly, softmax in
    float32, and dropped out, as the reference does.
    """

    dim: int
    proj_kernel: int
    kv_proj_stride: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        height = x.shape[1]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head
        padding = self.proj_kernel // 2

        x = ChanLayerNorm(name="norm", **dtypes)(x)
        q = DepthWiseConv2d(
            self.dim, inner_dim, self.proj_kernel, padding, 1, bias=False, name="to_q", **dtypes
        )(x, train=train)
        kv = DepthWiseConv2d(
            self.dim,
            2 * inner_dim,
            self.proj_kernel,
            padding,
            self.kv_proj_stride,
            bias=False,
            name="to_kv",
            **dtypes,
        )(x, train=train)
        k, v = jnp.split(kv, 2, axis=-1)
        q, k, v = (rearrange(t, "b x y (h d) -> b (x y) h d", h=self.heads) for t in (q, k, v))

        if train and self.dropout > 0:
            weights = nn.Dropout(self.dropout)(attention_weights(q, k), deterministic=False)
            out = apply_attention(weights, v)
        else:
            out = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
        out = rearrange(out, "b (x y) h d -> b x y (h d)", x=height)
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
