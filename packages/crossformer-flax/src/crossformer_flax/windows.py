"""Window partitioning for CrossFormer's short- and long-distance attention (einops rearranges)."""

from __future__ import annotations

from einops import rearrange

from vit_layers_flax.typing import Array

#: ``attn_type`` -> the einops layout of a feature map cut into ``s x s`` windows.
#: ``'short'``: windows of ``s x s`` adjacent positions (the reference's
#: ``'b d (h s1) (w s2) -> (b h w) d s1 s2'``). ``'long'``: windows of ``s x s`` positions
#: spaced ``H / s`` rows and ``W / s`` columns apart, i.e. the map is cut into ``s x s``
#: blocks and window ``(i, j)`` takes position ``(i, j)`` of every block (the reference's
#: ``'b d (l1 h) (l2 w) -> (b h w) d l1 l2'``).
LAYOUTS = {"short": "b (h s1) (w s2) d", "long": "b (s1 h) (s2 w) d"}
WINDOWS = "(b h w) (s1 s2) d"


def partition_windows(x: Array, window_size: int, attn_type: str) -> Array:
    """``(batch, H, W, d) -> (batch * (H / s) * (W / s), s * s, d)`` with ``s = window_size``.

    Windows are ordered ``(b h w)`` and each window's tokens row-major ``(s1 s2)``, as in the
    reference. ``attn_type`` is ``'short'`` (adjacent positions) or ``'long'`` (positions
    ``H / s`` apart), see :data:`LAYOUTS`.
    """
    return rearrange(x, f"{LAYOUTS[attn_type]} -> {WINDOWS}", s1=window_size, s2=window_size)


def merge_windows(windows: Array, window_size: int, attn_type: str, height: int, width: int) -> Array:
    """The inverse of :func:`partition_windows`: ``-> (batch, height, width, d)``."""
    return rearrange(
        windows,
        f"{WINDOWS} -> {LAYOUTS[attn_type]}",
        s1=window_size,
        s2=window_size,
        h=height // window_size,
        w=width // window_size,
    )
