"""ScalableViT's two attentions on NHWC maps: Scalable Self-Attention (SSA), whose keys and
values come from a strided convolution, and Interactive Window-based Self-Attention (IWSA)."""

from __future__ import annotations

import flax.linen as nn
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

Tile = int | tuple[int, int]


class _MapAttention(Layer):
    """What SSA and IWSA share: pre-norm (``norm``) attention on an NHWC map with bias-free
    queries (``to_q``, a pointwise convolution), ``heads`` with ``dim_key`` channels of
    queries and keys and ``dim_value`` of values (scale ``dim_key ** -0.5``), dropout on
    the attention weights, and ``to_out`` back to ``dim``."""

    dim: int
    heads: int = 8
    dim_key: int = 32
    dim_value: int = 32
    dropout: float = 0.0
    implementation: str | None = None

    def _attend(
        self, q: Array, k: Array, v: Array, tile: Tile, kv_tile: Tile, train: bool, local: Array | float = 0.0
    ) -> Array:
        """Each ``tile`` of the query map attends to the same ``kv_tile`` of the key / value
        maps; ``local`` is added before ``to_out`` and dropout."""
        size = q.shape[1:3]
        q, k, v = partition_windows(q, tile), partition_windows(k, kv_tile), partition_windows(v, kv_tile)
        q, k, v = (rearrange(t, "n t (h d) -> n t h d", h=self.heads) for t in (q, k, v))
        out = DotProductAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)
        out = merge_windows(rearrange(out, "n t h d -> n t (h d)"), tile, size) + local
        out = Dense(self.dim, name="to_out", dtype=self.dtype, param_dtype=self.param_dtype)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)


class ScalableSelfAttention(_MapAttention):
    """vit-pytorch's ``scalable_vit.ScalableSelfAttention``: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Every position attends to keys (``to_k``) and values (``to_v``) from bias-free
    ``reduction_factor``-square convolutions of that stride: ``(H / r) * (W / r)`` of them
    (``H`` and ``W`` multiples of ``r``, which the model checks per stage).
    """

    reduction_factor: int = 1

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        r = self.reduction_factor
        x = LayerNorm(name="norm", **dtypes)(x)
        q = Dense(self.heads * self.dim_key, use_bias=False, name="to_q", **dtypes)(x)
        k = Conv(self.heads * self.dim_key, r, strides=r, use_bias=False, name="to_k", **dtypes)(x)
        v = Conv(self.heads * self.dim_value, r, strides=r, use_bias=False, name="to_v", **dtypes)(x)
        return self._attend(q, k, v, q.shape[1:3], k.shape[1:3], train)


class InteractiveWindowedSelfAttention(_MapAttention):
    """vit-pytorch's ``scalable_vit.InteractiveWindowedSelfAttention``: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Attention inside ``window_size``-square windows (``None``: one window over the map) with
    pointwise keys and values (``to_k``, ``to_v``), plus the local interactive module
    (``local_interactive_module``, a 3 x 3 convolution of the whole value map, with bias),
    which mixes values across window borders.
    """

    window_size: int | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        window = x.shape[1:3] if self.window_size is None else self.window_size
        inner_key, inner_value = self.heads * self.dim_key, self.heads * self.dim_value
        x = LayerNorm(name="norm", **dtypes)(x)
        q = Dense(inner_key, use_bias=False, name="to_q", **dtypes)(x)
        k = Dense(inner_key, use_bias=False, name="to_k", **dtypes)(x)
        v = Dense(inner_value, use_bias=False, name="to_v", **dtypes)(x)
        local = Conv(inner_value, 3, padding=1, name="local_interactive_module", **dtypes)(v)
        return self._attend(q, k, v, window, window, train, local=local)
