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
    """What LSA and GSA share: pre-norm (``norm``, epsilon ``norm_epsilon``) attention on an
    NHWC map with queries (``to_q``, a pointwise convolution) and keys / values (``to_kv``,
    keys then values), ``heads`` of ``dim_head`` channels, and ``to_out`` back to ``dim``. The
    query, key and value projections have no bias unless ``qkv_bias`` (timm's)."""

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5

    def _attend(self, q: Array, k: Array, v: Array, train: bool, weight_dropout: float) -> Array:
        """Tokens ``(n, t, heads * dim_head)``: the queries attend to the keys and values, with
        ``weight_dropout`` on the weights; ``-> (n, t_q, heads * dim_head)``."""
        q, k, v = (rearrange(t, "n t (h d) -> n t h d", h=self.heads) for t in (q, k, v))
        out = DotProductAttention(weight_dropout, self.implementation, name="attend")(q, k, v, train=train)
        return rearrange(out, "n t h d -> n t (h d)")

    def _norm(self, x: Array) -> Array:
        return LayerNorm(
            epsilon=self.norm_epsilon, name="norm", dtype=self.dtype, param_dtype=self.param_dtype
        )(x)

    def _dense(self, features: int, name: str) -> Dense:
        return Dense(
            features, use_bias=self.qkv_bias, name=name, dtype=self.dtype, param_dtype=self.param_dtype
        )

    def _project_out(self, out: Array, train: bool) -> Array:
        out = Dense(self.dim, name="to_out", dtype=self.dtype, param_dtype=self.param_dtype)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)


class LocalAttention(_SpatialAttention):
    """Locally-grouped self-attention (LSA): ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Every token attends to the tokens of its own ``window_size x window_size`` window; keys
    and values are a pointwise projection. ``H`` and ``W`` must be multiples of the window,
    unless ``pad_windows`` (timm's): then the normalised map is zero-padded at the bottom and
    right to the next multiple, the padding takes part in the attention as keys and values
    (the projections of zeros: their biases), and its rows and columns are dropped after it.
    As in the reference, there is no dropout on the attention weights.
    """

    window_size: int = 7
    pad_windows: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        inner_dim = self.heads * self.dim_head
        height, width = x.shape[1:3]
        x = self._norm(x)
        if self.pad_windows:
            w = self.window_size
            x = jnp.pad(x, ((0, 0), (0, -height % w), (0, -width % w), (0, 0)))
        size = x.shape[1:3]
        windows = partition_windows(x, self.window_size)  # (batch * windows, window_size**2, dim)
        q = self._dense(inner_dim, "to_q")(windows)
        k, v = jnp.split(self._dense(2 * inner_dim, "to_kv")(windows), 2, axis=-1)
        out = self._attend(q, k, v, train, weight_dropout=0.0)
        out = merge_windows(out, self.window_size, size)[:, :height, :width]
        return self._project_out(out, train)


class GlobalAttention(_SpatialAttention):
    """Global sub-sampled attention (GSA): ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Every token attends to the keys and values of a ``reduction_factor``-square convolution
    of that stride (``to_kv``); as torch's convolution does, the last ``H % reduction_factor``
    rows and ``W % reduction_factor`` columns feed no key (the map must be at least
    ``reduction_factor`` on each side). ``dropout`` also acts on the attention weights.

    ``spatial_reduction`` (timm's and PVT's spatial-reduction attention) sub-samples the map
    instead with a convolution to ``dim`` channels (``reduce``, with a bias) and a LayerNorm
    (``reduce_norm``, epsilon 1e-5), and ``to_kv`` is a pointwise projection of that (of the
    map itself, without ``reduce``, where ``reduction_factor`` is 1).
    """

    reduction_factor: int = 7
    spatial_reduction: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner_dim = self.heads * self.dim_head
        r = self.reduction_factor
        height = x.shape[1]
        x = self._norm(x)
        q = self._dense(inner_dim, "to_q")(x)
        if not self.spatial_reduction:
            kv = Conv(2 * inner_dim, r, strides=r, use_bias=False, name="to_kv", **dtypes)(x)
        else:
            if r > 1:
                x = Conv(self.dim, r, strides=r, name="reduce", **dtypes)(x)
                x = LayerNorm(name="reduce_norm", **dtypes)(x)
            kv = self._dense(2 * inner_dim, "to_kv")(x)
        q, k, v = (rearrange(t, "b x y c -> b (x y) c") for t in (q, *jnp.split(kv, 2, axis=-1)))
        out = self._attend(q, k, v, train, weight_dropout=self.dropout)
        return self._project_out(rearrange(out, "b (x y) c -> b x y c", x=height), train)
