"""Twins-SVT's patch embedding: a space-to-depth merge in ``(c p1 p2)`` order, then LayerNorm, Dense, LayerNorm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Dense, LayerNorm
from vit_layers_flax.typing import Array, Dtype


class PatchEmbedding(nn.Module):
    """``(batch, H, W, C) -> (batch, H / patch_size, W / patch_size, dim_out)``.

    Each ``patch_size x patch_size`` patch of the map is flattened in ``(c p1 p2)`` order
    (channel outermost: the reference's ``rearrange(fmap, 'b c (h p1) (w p2) -> b (c p1 p2)
    h w')``), normalised (``patch_norm``), projected to ``dim_out`` (``proj``, the
    reference's 1x1 convolution, a ``Dense`` on the channel axis) and normalised again
    (``norm``); the norms are the reference's channel LayerNorms (eps 1e-5, biased
    variance) on the last axis. Parameters ``patch_norm``, ``proj`` and ``norm`` are the
    reference's ``proj.0``, ``proj.1``, ``proj.2``.

    The result stays a feature map, and the flattening order is not the ``(p1 p2 c)`` of
    :class:`vit_layers_flax.PatchEmbedding` (which returns tokens): hence this module.
    """

    dim_out: int
    patch_size: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        p = self.patch_size
        x = rearrange(x, "b (h p1) (w p2) c -> b h w (c p1 p2)", p1=p, p2=p)
        x = LayerNorm(name="patch_norm", **dtypes)(x)
        x = Dense(self.dim_out, name="proj", **dtypes)(x)
        return LayerNorm(name="norm", **dtypes)(x)
