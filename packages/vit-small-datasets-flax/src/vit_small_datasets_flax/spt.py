"""Shifted Patch Tokenization (SPT), after vit-pytorch's ``vit_for_small_dataset.SPT``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import Dense, InputSizes, Layer, LayerNorm, check_config, check_images, pair, patchify
from vit_layers_flax.typing import Array

#: ``(dy, dx)`` of the four shifted copies, in the reference's order: its ``F.pad`` shifts
#: ``(1, -1, 0, 0)``, ``(-1, 1, 0, 0)``, ``(0, 0, 1, -1)``, ``(0, 0, -1, 1)`` move the image
#: right, left, down and up by one pixel.
SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def shift(images: Array, dy: int, dx: int) -> Array:
    """Move an NHWC image by ``(dy, dx)`` pixels (|dy|, |dx| <= 1), zero-filling the border.

    ``(batch, H, W, C) -> (batch, H, W, C)``: pad one side, crop the other, as
    ``F.pad(x, (dx, -dx, dy, -dy))`` does on NCHW.
    """
    _, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, top : top + height, left : left + width, :]


def shifted_stack(images: Array) -> Array:
    """``(batch, H, W, C) -> (batch, H, W, 5 * C)``: the image, then its four shifted copies
    (right, left, down, up), concatenated on the channel axis as the reference's ``torch.cat``."""
    return jnp.concatenate([images, *(shift(images, dy, dx) for dy, dx in SHIFTS)], axis=-1)


class SPT(Layer):
    """Shifted Patch Tokenization: ``(batch, H, W, channels) -> (batch, num_patches, dim)``.

    Lee, Lee and Song, 2021 (arXiv:2112.13492). The image and four copies shifted by one pixel
    (right, left, down, up) are stacked on the channel axis, cut into patches flattened in
    ``(p1 p2 c)`` order, normalised (``patch_norm``, the reference's ``to_patch_tokens.1``) and
    projected to ``dim`` (``proj``, ``to_patch_tokens.2``). Any image whose height and width
    are multiples of ``patch_size`` (an int as in the reference, or a ``(height, width)`` pair)
    is accepted.
    """

    dim: int
    patch_size: int | tuple[int, int]
    channels: int = 3

    def __post_init__(self):
        check_config(min(self.dim, self.channels, *pair(self.patch_size)) > 0, "SPT: sizes must be positive")
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        """Every multiple of the patch size."""
        height, width = pair(self.patch_size)
        return InputSizes(height, height, None if width == height else InputSizes(width, width))

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        patch_size = pair(self.patch_size)
        check_images(img, channels=self.channels, multiple_of=patch_size, name="SPT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = patchify(shifted_stack(img), patch_size)
        x = LayerNorm(name="patch_norm", **dtypes)(x)
        return Dense(self.dim, name="proj", **dtypes)(x)
