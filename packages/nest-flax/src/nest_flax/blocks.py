"""Partition an NHWC feature map into non-overlapping blocks of tokens, and merge them back."""

from __future__ import annotations

from einops import rearrange

from vit_layers_flax.typing import Array


def partition_blocks(x: Array, block_size: int) -> Array:
    """``(batch, H, W, C) -> (batch * block_size**2, (H / block_size) * (W / block_size), C)``.

    The map is cut into a ``block_size x block_size`` grid of blocks; each block becomes one
    sequence of tokens in row-major ``(h w)`` order. Blocks are ordered ``(b b1 b2)``, as the
    reference's ``rearrange(x, 'b c (b1 h) (b2 w) -> (b b1 b2) c h w')``.
    """
    return rearrange(x, "b (b1 h) (b2 w) c -> (b b1 b2) (h w) c", b1=block_size, b2=block_size)


def merge_blocks(tokens: Array, block_size: int, block_height: int) -> Array:
    """The inverse of :func:`partition_blocks`: ``(batch * block_size**2, h * w, C) ->
    (batch, block_size * h, block_size * w, C)``, with ``h = block_height``."""
    return rearrange(
        tokens, "(b b1 b2) (h w) c -> b (b1 h) (b2 w) c", b1=block_size, b2=block_size, h=block_height
    )
