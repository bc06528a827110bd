"""Patch embedding: cut an NHWC image into patches and project them to tokens."""

from __future__ import annotations

import flax.linen as nn
from einops import rearrange

from vit_layers_flax.dense import Dense
from vit_layers_flax.layer_norm import LayerNorm
from vit_layers_flax.module import Layer
from vit_layers_flax.typing import Array


def patchify(images: Array, patch_size: tuple[int, int]) -> Array:
    """``(batch, H, W, C) -> (batch, (H/ph)*(W/pw), ph*pw*C)``, features in ``(p1 p2 c)`` order,
    as the reference's ``Rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)')``."""
    p1, p2 = patch_size
    return rearrange(images, "b (h p1) (w p2) c -> b (h w) (p1 p2 c)", p1=p1, p2=p2)


class PatchEmbedding(Layer):
    """``patchify -> LayerNorm(patch_dim) -> Dense(dim) -> LayerNorm(dim)``.

    ``(batch, H, W, C) -> (batch, num_patches, dim)``; parameters ``patch_norm``, ``proj``
    and ``norm`` (the reference's ``to_patch_embedding.1``, ``.2``, ``.3``). ``norms=False``
    leaves out both LayerNorms: the original ViT's patch projection (a convolution with
    kernel and stride ``patch_size`` is this Dense on the ``(p1 p2 c)`` patches).
    """

    dim: int
    patch_size: tuple[int, int]
    norms: bool = True

    @nn.compact
    def __call__(self, images: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = patchify(images, self.patch_size)
        if not self.norms:
            return Dense(self.dim, name="proj", **dtypes)(x)
        x = LayerNorm(name="patch_norm", **dtypes)(x)
        x = Dense(self.dim, name="proj", **dtypes)(x)
        return LayerNorm(name="norm", **dtypes)(x)
