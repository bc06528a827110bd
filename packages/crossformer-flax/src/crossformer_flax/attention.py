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
from crossformer_flax.windows import merge_windows, partition_windows
from vit_layers_flax import ChanLayerNorm, Dense, SoftmaxAttention, split_qkv
from vit_layers_flax.typing import Array, Dtype


class WindowAttention(nn.Module):
    """vit-pytorch ``crossformer.Attention``: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    The map is normalised over channels (``norm``, a channel LayerNorm with ``g``/``b``),
    cut into ``window_size x window_size`` windows (:func:`~crossformer_flax.windows.partition_windows`;
    ``attn_type`` ``'short'``: adjacent positions, ``'long'``: positions ``H / window_size``
    apart) folded into the batch axis, and each window's ``window_size ** 2`` tokens attend
    to each other with ``heads`` heads of ``dim_head`` channels (``to_qkv``, no bias;
    ``heads`` defaults to ``dim // dim_head``, as in the reference). The logits get one
    ``(n, n)`` bias shared by all heads and windows, computed once per call by the
    :class:`~crossformer_flax.position_bias.DynamicPositionBias` (``dpb``, ``dim // 4``
    wide) and indexed as the reference does (see
    :func:`~crossformer_flax.position_bias.relative_position_indices`). The windows are put
    back and projected to ``dim`` (``to_out``, with bias). ``dropout`` acts on the attention
    weights only (the reference has no output dropout here), when ``train=True``. In
    evaluation (or without dropout) the attention is :func:`jax.nn.dot_product_attention`
    with ``bias=`` (``implementation``: ``None``, ``'xla'`` or ``'cudnn'``); with dropout in
    training the weights are computed explicitly, softmax in float32, and dropped out.
    ``H`` and ``W`` must be multiples of ``window_size`` (the model checks this first).
    """

    dim: int
    attn_type: str
    window_size: int
    heads: int | None = None
    dim_head: int = 32
    dropout: float = 0.0
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        if self.attn_type not in ("short", "long"):
            raise ValueError(f"attn_type must be 'short' or 'long', received {self.attn_type!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        _, height, width, _ = x.shape
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        heads = self.dim // self.dim_head if self.heads is None else self.heads
        wsz = self.window_size

        x = ChanLayerNorm(name="norm", **dtypes)(x)
        x = partition_windows(x, wsz, self.attn_type)
        qkv = Dense(3 * heads * self.dim_head, use_bias=False, name="to_qkv", **dtypes)(x)
        q, k, v = split_qkv(qkv, heads)

        # Dynamic position bias, computed once per call and shared by every window and head:
        # the MLP runs on the (2w+1)^2 offsets in [-w, w]^2, and the (w^2, w^2) constant
        # indices pick from that table as if it were (2w-1)^2 with row stride 2w-1 -- the
        # reference's indexing, copied exactly (see relative_position_indices).
        biases = DynamicPositionBias(self.dim // 4, name="dpb", **dtypes)(
            jnp.asarray(relative_positions(wsz))
        )
        bias = biases[relative_position_indices(wsz)][None, None]  # (1, 1, n, n)

        out = SoftmaxAttention(self.dropout, self.implementation, name="attend")(q, k, v, bias, train=train)
        out = rearrange(out, "b n h d -> b n (h d)")
        # to_out is a 1x1 conv in the reference: per position, so applying it to the windows is the same
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return merge_windows(out, wsz, self.attn_type, height, width)
