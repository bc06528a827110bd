"""Twins-SVT's spatially separable self-attention: locally-grouped attention inside windows,
then global sub-sampled attention to a strided summary of the whole map."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Conv, Dense, LayerNorm, SoftmaxAttention, merge_windows, partition_windows
from vit_layers_flax.typing import Array, Dtype


class LocalAttention(nn.Module):
    """Locally-grouped self-attention (LSA), pre-norm: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    The map is normalised over channels (``norm``), cut into ``patch_size x patch_size``
    windows (:func:`vit_layers_flax.partition_windows`; ``H`` and ``W`` must be
    multiples of ``patch_size``) folded into the batch axis, and every token attends to the
    ``patch_size**2`` tokens of its own window, through :func:`jax.nn.dot_product_attention`
    (``implementation``: ``None`` for XLA's choice, ``'xla'`` or ``'cudnn'``). Queries
    (``to_q``) and keys / values (``to_kv``, ``2 * heads * dim_head`` channels split into
    keys then values) are bias-free projections, the reference's 1x1 convolutions; the
    windows are merged back and projected to ``dim`` (``to_out``, with bias) then dropped
    out. As in the reference there is no dropout on the attention weights.
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    patch_size: int = 7
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        _, height, width, _ = x.shape
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head

        x = LayerNorm(name="norm", **dtypes)(x)
        windows = partition_windows(x, self.patch_size)  # (batch * windows, patch_size**2, dim)
        q = Dense(inner_dim, use_bias=False, name="to_q", **dtypes)(windows)
        k, v = jnp.split(Dense(2 * inner_dim, use_bias=False, name="to_kv", **dtypes)(windows), 2, axis=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b n h d", h=self.heads) for t in (q, k, v))

        out = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
        out = merge_windows(rearrange(out, "b n h d -> b n (h d)"), self.patch_size, (height, width))
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)


class GlobalAttention(nn.Module):
    """Global sub-sampled attention (GSA), pre-norm: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Every one of the ``H * W`` tokens (row-major) queries (``to_q``, a bias-free 1x1
    projection) the ``(H // k) * (W // k)`` keys and values of a ``k x k``, stride-``k``
    bias-free convolution of the normalised map (``to_kv``, ``2 * heads * dim_head``
    channels split into keys then values). As torch's convolution does, a size that is
    not a multiple of ``k`` is floored: the last ``H % k`` rows and ``W % k`` columns
    feed no key (the map must be at least ``k x k``). The result is projected to ``dim``
    (``to_out``, with bias) and dropped out. In evaluation (or with ``dropout == 0``) the
    attention is :func:`jax.nn.dot_product_attention` (``implementation``: ``None``,
    ``'xla'`` or ``'cudnn'``); with dropout in training the weights are computed
    explicitly (softmax in float32) and dropped out, as the reference does.
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    k: int = 7
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        height = x.shape[1]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head

        x = LayerNorm(name="norm", **dtypes)(x)
        q = Dense(inner_dim, use_bias=False, name="to_q", **dtypes)(x)
        kv = Conv(
            2 * inner_dim,
            (self.k, self.k),
            stride=(self.k, self.k),  # torch's padding=0: floor(H / k) x floor(W / k) keys
            use_bias=False,
            name="to_kv",
            **dtypes,
        )(x)
        k, v = jnp.split(kv, 2, axis=-1)
        q, k, v = (rearrange(t, "b x y (h d) -> b (x y) h d", h=self.heads) for t in (q, k, v))

        out = SoftmaxAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)
        out = rearrange(out, "b (x y) h d -> b x y (h d)", x=height)
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
