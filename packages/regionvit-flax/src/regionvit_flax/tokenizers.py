"""RegionViT's tokenizers: local tokens from a convolution (one or three), regional tokens from patches."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import ChanLayerNorm, gelu
from vit_layers_flax.typing import Array, Dtype


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """The side of a convolution's output: ``(size + 2 * padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


class LocalTokenizer3Conv(nn.Module):
    """The reference's ``local_encoder`` with ``tokenize_local_3_conv=True``.

    ``(batch, H, W, channels) -> (batch, ceil(ceil(H / 2) / 2), ceil(ceil(W / 2) / 2), dim)``:
    ``conv1`` (3x3, stride 2, padding 1) -> channel LayerNorm ``norm1`` -> GELU (exact) ->
    ``conv2`` (3x3, stride 2, padding 1) -> ``norm2`` -> GELU -> ``conv3`` (3x3, stride 1,
    padding 1); the reference's ``Sequential`` indices 0, 1, 3, 4 and 6. The norms are the
    reference's ``ChanLayerNorm`` (biased variance, eps 1e-5, ``g``/``b``); there is no BatchNorm.
    """

    dim: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def conv(stride: int, name: str) -> nn.Conv:
            return nn.Conv(
                self.dim, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)), name=name, **dtypes
            )

        x = gelu(ChanLayerNorm(name="norm1", **dtypes)(conv(2, "conv1")(x)))
        x = gelu(ChanLayerNorm(name="norm2", **dtypes)(conv(2, "conv2")(x)))
        return conv(1, "conv3")(x)


def region_patches(images: Array, patch_size: int) -> Array:
    """``(batch, H, W, C) -> (batch, H / p, W / p, C * p * p)``, each patch flattened ``(c p1 p2)``.

    The reference's ``Rearrange('b c (h p1) (w p2) -> b (c p1 p2) h w')`` before the 1x1
    convolution of its ``region_encoder`` (here a ``Dense`` on the last axis): note the channel-
    first flattening order, unlike the ``(p1 p2 c)`` of ViT's patches.
    """
    return rearrange(images, "b (h p1) (w p2) c -> b h w (c p1 p2)", p1=patch_size, p2=patch_size)
