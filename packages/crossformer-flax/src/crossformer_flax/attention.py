"""CrossFormer's long short distance attention (LSDA): window attention with a dynamic position bias."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from crossformer_flax.position_bias import (
    DynamicPositionBias,
    relative_position_indices,
    relative_positions,
)
from vit_layers_flax import (
    Dense,
    DotProductAttention,
    Layer,
    LayerNorm,
    merge_windows,
    partition_windows,
    split_qkv,
)
from vit_layers_flax.typing import Array

#: A ``'long'`` window holds ``w x w`` positions ``H / w`` rows and ``W / w`` columns apart
#: (the reference's ``'b d (l1 h) (l2 w) -> (b h w) d l1 l2'``): interleaving the map's
#: ``w x w`` blocks makes them adjacent, so that :func:`vit_layers_flax.partition_windows`
#: cuts them out like ``'short'`` windows.
_INTERLEAVE = "b (s1 h) (s2 w) d -> b (h s1) (w s2) d"
_DEINTERLEAVE = "b (h s1) (w s2) d -> b (s1 h) (s2 w) d"


def distance_windows(x: Array, window_size: int, attn_type: str) -> Array:
    """``(batch, H, W, d) -> (batch * (H / w) * (W / w), w * w, d)``, windows ordered as the
    reference's: adjacent positions (``'short'``) or positions ``H / w`` apart (``'long'``)."""
    if attn_type == "long":
        x = rearrange(x, _INTERLEAVE, s1=window_size, s2=window_size)
    return partition_windows(x, window_size)


def merge_distance_windows(windows: Array, window_size: int, attn_type: str, size: tuple[int, int]) -> Array:
    """The inverse of :func:`distance_windows`: ``-> (batch, H, W, d)`` with ``(H, W) = size``."""
    x = merge_windows(windows, window_size, size)
    if attn_type == "long":
        x = rearrange(x, _DEINTERLEAVE, s1=window_size, s2=window_size)
    return x


class LongShortDistanceAttention(Layer):
    """vit-pytorch ``crossformer.Attention``, short- or long-distance: ``(batch, H, W, dim)`` in and out.

    The map is normalised over channels (``norm``), cut into ``window_size x window_size``
    windows (:func:`distance_windows`; ``attn_type`` ``'short'``: adjacent positions,
    ``'long'``: positions ``H / window_size`` apart), and each window's tokens attend to each
    other (``to_qkv``, no bias; ``heads`` defaults to ``dim // dim_head``, as in the
    reference) with one ``(n, n)`` bias shared by all heads and windows, computed once per
    call by the :class:`~crossformer_flax.DynamicPositionBias` (``dpb``, ``dim // 4`` wide).
    The windows are put back and projected (``to_out``). ``dropout`` acts on the attention
    weights only (the reference has no output dropout here).
    """

    dim: int
    attn_type: str
    window_size: int
    heads: int | None = None
    dim_head: int = 32
    dropout: float = 0.0
    implementation: str | None = None

    def __post_init__(self):
        if self.attn_type not in ("short", "long"):
            raise ValueError(f"attn_type must be 'short' or 'long', received {self.attn_type!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        size = x.shape[1:3]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        heads = self.dim // self.dim_head if self.heads is None else self.heads
        window = self.window_size

        x = LayerNorm(name="norm", **dtypes)(x)
        x = distance_windows(x, window, self.attn_type)
        qkv = Dense(3 * heads * self.dim_head, use_bias=False, name="to_qkv", **dtypes)(x)
        q, k, v = split_qkv(qkv, heads)

        # the MLP runs on the (2w+1)^2 offsets in [-w, w]^2, and the (w^2, w^2) constant indices
        # pick from that table as if it were (2w-1)^2 with row stride 2w-1: the reference's
        # indexing, copied exactly (see relative_position_indices)
        biases = DynamicPositionBias(self.dim // 4, name="dpb", **dtypes)(
            jnp.asarray(relative_positions(window))
        )
        bias = biases[relative_position_indices(window)]  # (n, n), shared by every window and head

        out = DotProductAttention(self.dropout, self.implementation, name="attend")(
            q, k, v, bias, train=train
        )
        out = rearrange(out, "b n h d -> b n (h d)")
        # to_out is a 1x1 conv in the reference: per position, so applying it to the windows is the same
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return merge_distance_windows(out, window, self.attn_type, size)
