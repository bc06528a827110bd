"""``torch.nn.Unfold`` for NHWC images: sliding patches in the ``(c kh kw)`` feature order."""

from __future__ import annotations

import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import pair
from vit_layers_flax.typing import Array


def unfold_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """The number of patch positions along one axis (the reference's ``conv_output_size``)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def unfold(
    x: Array,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> Array:
    """``(batch, H, W, C) -> (batch, H' * W', C * kh * kw)``, as ``nn.Unfold`` + ``'b c n -> b n c'``.

    Zero-pads ``padding`` on both sides, then takes every ``kh x kw`` window with the given
    stride. Tokens are in row-major ``(h' w')`` order and each token's features in torch's
    ``(c kh kw)`` order (channel-major), so the result equals the reference's on the NCHW
    image. The windows are gathered by ``kh * kw`` strided slices of the NHWC image (no
    transpose to NCHW, no matmul), which is exact in every dtype.
    """
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel_size), pair(stride), pair(padding)
    _, height, width, _ = x.shape
    oh, ow = unfold_output_size(height, kh, sh, ph), unfold_output_size(width, kw, sw, pw)
    x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    windows = [
        x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]  # kh * kw arrays of shape (batch, oh, ow, C), in (kh kw) order
    return rearrange(jnp.stack(windows, axis=-1), "b h w c k -> b (h w) (c k)")
