"""Group local tokens into one window per regional token (and back), with the regional token first."""

from __future__ import annotations

import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax.typing import Array


def partition_windows(local_tokens: Array, region_tokens: Array) -> Array:
    """``(batch, rh * wh, rw * ww, dim)``, ``(batch, rh, rw, dim)`` ``-> (batch * rh * rw, 1 + wh * ww, dim)``.

    The local map is cut into the ``rh x rw`` grid of its regional tokens, each window
    ``wh x ww`` local tokens flattened row-major and preceded by its regional token. Windows are
    ordered ``(b h w)``, as the reference's ``rearrange(local_tokens, 'b (h p1) (w p2) d -> (b h w)
    (p1 p2) d')`` and ``rearrange(region_tokens, 'b n d -> (b n) () d')``.
    """
    rh, rw = region_tokens.shape[1:3]
    local = rearrange(local_tokens, "b (h p1) (w p2) d -> (b h w) (p1 p2) d", h=rh, w=rw)
    region = rearrange(region_tokens, "b h w d -> (b h w) 1 d")
    return jnp.concatenate([region, local], axis=1)


def merge_windows(tokens: Array, grid: tuple[int, int], window: tuple[int, int]) -> tuple[Array, Array]:
    """The inverse of :func:`partition_windows`: ``(batch * rh * rw, 1 + wh * ww, dim) ->
    ((batch, rh * wh, rw * ww, dim), (batch, rh, rw, dim))`` with ``grid = (rh, rw)`` and
    ``window = (wh, ww)``: the local map and the regional tokens."""
    (rh, rw), (wh, _) = grid, window
    local = rearrange(tokens[:, 1:], "(b h w) (p1 p2) d -> b (h p1) (w p2) d", h=rh, w=rw, p1=wh)
    region = rearrange(tokens[:, 0], "(b h w) d -> b h w d", h=rh, w=rw)
    return local, region
