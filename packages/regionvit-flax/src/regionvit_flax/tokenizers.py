"""RegionViT's tokenizers: local tokens from a convolution (one or three), regional tokens from patches."""

from __future__ import annotations

import flax.linen as nn
from einops import rearrange

from vit_layers_flax import Conv, Layer, LayerNorm, gelu
from vit_layers_flax.typing import Array


class LocalTokenizer3Conv(Layer):
    """The reference's ``local_encoder`` with ``tokenize_local_3_conv=True``.

    ``(batch, H, W, channels) -> (batch, ceil(ceil(H / 2) / 2), ceil(ceil(W / 2) / 2), dim)``:
    ``conv1`` (3x3, stride 2, padding 1) -> LayerNorm ``norm1`` over channels -> GELU ->
    ``conv2`` (3x3, stride 2, padding 1) -> ``norm2`` -> GELU -> ``conv3`` (3x3, padding 1);
    the reference's ``Sequential`` indices 0, 1, 3, 4 and 6.
    """

    dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def conv(stride: int, name: str) -> Conv:
            return Conv(self.dim, 3, strides=stride, padding=1, name=name, **dtypes)

        x = gelu(LayerNorm(name="norm1", **dtypes)(conv(2, "conv1")(x)))
        x = gelu(LayerNorm(name="norm2", **dtypes)(conv(2, "conv2")(x)))
        return conv(1, "conv3")(x)


def region_patches(images: Array, patch_size: int) -> Array:
    """``(batch, H, W, C) -> (batch, H / p, W / p, C * p * p)``, each patch flattened ``(c p1 p2)``.

    The reference's ``Rearrange('b c (h p1) (w p2) -> b (c p1 p2) h w')`` before the 1x1
    convolution of its ``region_encoder`` (here a ``Dense`` on the last axis): note the
    channel-first flattening order, unlike the ``(p1 p2 c)`` of ViT's patches.
    """
    return rearrange(images, "b (h p1) (w p2) c -> b h w (c p1 p2)", p1=patch_size, p2=patch_size)
