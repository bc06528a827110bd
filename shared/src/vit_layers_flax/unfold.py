"""``torch.nn.Unfold`` for NHWC images: overlapping patches in the ``(c kh kw)`` feature order."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from einops import rearrange

from vit_layers_flax.typing import Array
from vit_layers_flax.validation import conv_output_size, pair


def _window_indices(size: int, kernel_size: int, stride: int) -> np.ndarray:
    """``(positions, kernel_size)`` indices ``position * stride + offset`` along one axis."""
    positions = conv_output_size(size, kernel_size, stride)
    return np.arange(positions)[:, None] * stride + np.arange(kernel_size)[None, :]


def unfold(
    x: Array,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> Array:
    """``(batch, H, W, C) -> (batch, H' * W', C * kh * kw)``, as ``nn.Unfold`` + ``'b c n -> b n c'``.

    Zero-pads ``padding`` on both sides, then takes every ``kh x kw`` window with the given
    stride (windows may overlap; rows and columns past the last full window are dropped,
    as in torch). Tokens are in row-major ``(h' w')`` order and each token's features in
    torch's ``(c kh kw)`` order (channel-major), so the result equals the reference's on
    the NCHW image. The windows are gathered with static indices, one gather per spatial
    axis (no transpose to NCHW, no matmul), which is exact in every dtype.
    """
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel_size), pair(stride), pair(padding)
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    rows = _window_indices(x.shape[1], kh, sh)  # (H', kh)
    cols = _window_indices(x.shape[2], kw, sw)  # (W', kw)
    # the indices are in bounds by construction; "clip" spares the out-of-bounds masking
    x = jnp.take(x, rows, axis=1, mode="clip")  # (batch, H', kh, W, C)
    x = jnp.take(x, cols, axis=3, mode="clip")  # (batch, H', kh, W', kw, C)
    return rearrange(x, "b h kh w kw c -> b (h w) (c kh kw)")
