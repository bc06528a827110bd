"""Partition an NHWC feature map into non-overlapping windows of tokens, and merge them back.

Window attention (Twins-SVT's locally-grouped attention, ScalableViT's IWSA, ...) folds
the windows into the batch axis: one reshape each way, no gathers and no loop over windows.
"""

from __future__ import annotations

from einops import rearrange

from vit_layers_flax.typing import Array
from vit_layers_flax.validation import pair


def partition_windows(x: Array, window: int | tuple[int, int]) -> Array:
    """``(batch, H, W, C) -> (batch * (H / wh) * (W / ww), wh * ww, C)``, ``(wh, ww) = window``.

    Each window becomes one sequence of tokens in row-major ``(w1 w2)`` order; windows are
    ordered ``(b x y)`` (batch, window row, window column), as vit-pytorch's
    ``rearrange(t, 'b c (x w1) (y w2) -> (b x y) c w1 w2')`` orders them. ``H`` and ``W``
    must be multiples of the window (models check this per stage with
    :func:`~vit_layers_flax.check_stage_size`, at trace time).
    """
    wh, ww = pair(window)
    return rearrange(x, "b (x w1) (y w2) c -> (b x y) (w1 w2) c", w1=wh, w2=ww)


def merge_windows(tokens: Array, window: int | tuple[int, int], size: tuple[int, int]) -> Array:
    """The inverse of :func:`partition_windows`: ``(batch * nx * ny, wh * ww, C) -> (batch, H, W, C)``
    with ``(H, W) = size``, ``nx = H / wh`` and ``ny = W / ww``."""
    wh, ww = pair(window)
    height, width = size
    return rearrange(
        tokens, "(b x y) (w1 w2) c -> b (x w1) (y w2) c", x=height // wh, y=width // ww, w1=wh, w2=ww
    )
