"""The regional-to-local transformer: regional self-attention, then local windows with their regional token."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from regionvit_flax.position_bias import local_rel_pos_indices
from vit_layers_flax import (
    Attention,
    FeedForward,
    Layer,
    Model,
    apply_blocks,
    merge_windows,
    partition_windows,
)
from vit_layers_flax.typing import Array


def partition_region_windows(local_tokens: Array, region_tokens: Array) -> Array:
    """``(batch, rh * wh, rw * ww, dim)``, ``(batch, rh, rw, dim)`` ``-> (batch * rh * rw, 1 + wh * ww, dim)``.

    The local map's ``wh x ww`` windows (:func:`~vit_layers_flax.partition_windows`, ordered
    ``(b h w)``), each preceded by the regional token over it: the reference's
    ``rearrange(local_tokens, 'b (h p1) (w p2) d -> (b h w) (p1 p2) d')`` and
    ``rearrange(region_tokens, 'b n d -> (b n) () d')``, concatenated.
    """
    (lh, lw), (rh, rw) = local_tokens.shape[1:3], region_tokens.shape[1:3]
    local = partition_windows(local_tokens, (lh // rh, lw // rw))
    return jnp.concatenate([rearrange(region_tokens, "b h w d -> (b h w) 1 d"), local], axis=1)


def merge_region_windows(
    tokens: Array, grid: tuple[int, int], window: tuple[int, int]
) -> tuple[Array, Array]:
    """The inverse of :func:`partition_region_windows`, with ``grid = (rh, rw)`` and ``window =
    (wh, ww)``: ``-> (batch, rh * wh, rw * ww, dim)`` local and ``(batch, rh, rw, dim)`` regional tokens."""
    (rh, rw), (wh, ww) = grid, window
    local = merge_windows(tokens[:, 1:], window, (rh * wh, rw * ww))
    return local, rearrange(tokens[:, 0], "(b h w) d -> b h w d", h=rh, w=rw)


class R2LBlock(Layer):
    """One layer of the reference's ``R2LTransformer``, on windows with their regional token first.

    ``(batch * num_regions, 1 + window_tokens, dim) -> (same)``, ``bias: (1, heads, 1 +
    window_tokens, 1 + window_tokens)``. The one attention ``attn`` is used twice, as in the
    reference: regional self-attention over the ``num_regions`` regional tokens of each image
    (no bias), then local self-attention inside every window with its regional token (whose
    row and column of ``bias`` are zero); both residual. Then the feed-forward ``ff``
    (residual, no output dropout, as the reference) on every token.
    """

    dim: int
    num_regions: int
    heads: int = 4
    dim_head: int = 32
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    attention_implementation: str | None = None

    @nn.compact
    def __call__(self, tokens: Array, bias: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = Attention(
            self.dim,
            heads=self.heads,
            dim_head=self.dim_head,
            dropout=self.attn_dropout,
            implementation=self.attention_implementation,
            name="attn",
            **dtypes,
        )
        # regional self-attention: the regional tokens of one image attend to each other
        region = rearrange(tokens[:, :1], "(b n) 1 d -> b n d", n=self.num_regions)
        region = attn(region, train=train) + region
        tokens = jnp.concatenate([rearrange(region, "b n d -> (b n) 1 d"), tokens[:, 1:]], axis=1)
        # local self-attention in each window, with its regional token, by the same module
        tokens = attn(tokens, bias, train=train) + tokens
        ff = FeedForward(
            self.dim, 4 * self.dim, dropout=self.ff_dropout, output_dropout=False, name="ff", **dtypes
        )
        return ff(tokens, train=train) + tokens


class R2LTransformer(Model):
    """vit-pytorch's ``regionvit.R2LTransformer``: ``depth`` :class:`R2LBlock` s (``layers_{i}``).

    ``local_tokens: (batch, rh * wh, rw * ww, dim)``, ``region_tokens: (batch, rh, rw, dim)``
    ``-> (local_tokens, region_tokens)`` of the same shapes: each regional token owns the
    ``wh x ww`` window under it (at most ``window_size``). The windows' relative position bias
    table ``local_rel_pos_bias`` (``((2 * window_size - 1) ** 2, heads)``, the reference's
    ``nn.Embedding``) is gathered once per call and shared by every window and layer; the
    windows are partitioned once before the layers and merged once after (the reference's
    per-layer round trip is the identity).
    """

    dim: int
    window_size: int
    depth: int = 4
    heads: int = 4
    dim_head: int = 32
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    attention_implementation: str | None = None

    @nn.compact
    def __call__(
        self, local_tokens: Array, region_tokens: Array, *, train: bool = False
    ) -> tuple[Array, Array]:
        (lh, lw), (rh, rw) = local_tokens.shape[1:3], region_tokens.shape[1:3]
        window = (lh // rh, lw // rw)
        table = self.param(
            "local_rel_pos_bias",
            nn.initializers.normal(stddev=1.0),  # torch's nn.Embedding init
            ((2 * self.window_size - 1) ** 2, self.heads),
            self.param_dtype,
        )
        bias = rearrange(table[local_rel_pos_indices(window, self.window_size)], "i j h -> 1 h i j")
        bias = jnp.pad(bias, ((0, 0), (0, 0), (1, 0), (1, 0)))  # zero bias to and from the regional token

        def block(name: str) -> R2LBlock:
            return R2LBlock(
                self.dim,
                rh * rw,
                heads=self.heads,
                dim_head=self.dim_head,
                attn_dropout=self.attn_dropout,
                ff_dropout=self.ff_dropout,
                attention_implementation=self.attention_implementation,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        tokens = partition_region_windows(local_tokens, region_tokens)
        tokens = apply_blocks(block, self.depth, tokens, bias, train=train, scan=self.scan, remat=self.remat)
        return merge_region_windows(tokens, (rh, rw), window)
