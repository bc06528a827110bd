"""Twins-SVT's spatially separable self-attention: locally-grouped attention inside windows
(LSA), and global sub-sampled attention to a strided summary of the whole map (GSA)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import (
    Conv,
    Dense,
    DotProductAttention,
    Layer,
    LayerNorm,
    merge_windows,
    partition_windows,
)
from vit_layers_flax.typing import Array


class _SpatialAttention(Layer):
    """What LSA and GSA share: pre-norm (``norm``) attention on an NHWC map with bias-free
    queries (``to_q``, a pointwise convolution) and keys / values (``to_kv``, keys then
    values), ``heads`` of ``dim_head`` channels, and ``to_out`` back to ``dim``."""

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None

    def _attend(self, q: Array, k: Array, v: Array, train: bool, weight_dropout: float) -> Array:
        """Tokens ``(n, t, heads * dim_head)``: the queries attend to the keys and values, with
        ``weight_dropout`` on the weights; ``-> (n, t_q, heads * dim_head)``."""
        q, k, v = (rearrange(t, "n t (h d) -> n t h d", h=self.heads) for t in (q, k, v))
        out = DotProductAttention(weight_dropout, self.implementation, name="attend")(q, k, v, train=train)
        return rearrange(out, "n t h d -> n t (h d)")

    def _project_out(self, out: Array, train: bool) -> Array:
        out = Dense(self.dim, name="to_out", dtype=self.dtype, param_dtype=self.param_dtype)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)


class LocalAttention(_SpatialAttention):
    """Locally-grouped self-attention (LSA): ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Every token attends to the tokens of its own ``window_size x window_size`` window (``H``
    and ``W`` multiples of it); keys and values are a pointwise projection. As in the
    reference, there is no dropout on the attention weights.
    """

    window_size: int = 7

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head
        size = x.shape[1:3]
        x = LayerNorm(name="norm", **dtypes)(x)
        windows = partition_windows(x, self.window_size)  # (batch * windows, window_size**2, dim)
        q = Dense(inner_dim, use_bias=False, name="to_q", **dtypes)(windows)
        k, v = jnp.split(Dense(2 * inner_dim, use_bias=False, name="to_kv", **dtypes)(windows), 2, axis=-1)
        out = self._attend(q, k, v, train, weight_dropout=0.0)
        return self._project_out(merge_windows(out, self.window_size, size), train)


class GlobalAttention(_SpatialAttention):
    """Global sub-sampled attention (GSA): ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Every token attends to the keys and values of a ``reduction_factor``-square convolution
    of that stride (``to_kv``); as torch's convolution does, the last ``H % reduction_factor``
    rows and ``W % reduction_factor`` columns feed no key (the map must be at least
    ``reduction_factor`` on each side). ``dropout`` also acts on the attention weights.
    """

    reduction_factor: int = 7

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head
        r = self.reduction_factor
        height = x.shape[1]
        x = LayerNorm(name="norm", **dtypes)(x)
        q = Dense(inner_dim, use_bias=False, name="to_q", **dtypes)(x)
        kv = Conv(2 * inner_dim, r, strides=r, use_bias=False, name="to_kv", **dtypes)(x)
        q, k, v = (rearrange(t, "b x y c -> b (x y) c") for t in (q, *jnp.split(kv, 2, axis=-1)))
        out = self._attend(q, k, v, train, weight_dropout=self.dropout)
        return self._project_out(rearrange(out, "b (x y) c -> b x y c", x=height), train)
