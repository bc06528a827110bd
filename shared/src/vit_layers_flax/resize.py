"""Torch's (not antialiased) bicubic interpolation, for the original architectures and
checkpoints that use it: ``F.interpolate(mode='bicubic', align_corners=False)``.
``jax.image.resize``'s cubic is Keys' with ``A = -0.5``; torch's is ``A = -0.75``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def torch_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)``: torch's bicubic interpolation along one axis (Keys' cubic with
    ``A = -0.75``, source indices clamped to the edge, no antialiasing), as a matrix. The
    source positions are rounded to float32 as torch's are for float32 input (its scale
    ``size_in / size_out`` in float32, the position rounded once): at 240 -> 224 px the
    exact positions would move the weights by 2e-5."""
    a = -0.75

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    scale = float(np.float32(size_in / size_out))
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        source = float(np.float32(scale * (i + 0.5) - 0.5))
        first = math.floor(source)
        t = source - first
        for k, weight in enumerate((far(t + 1), near(t), near(1 - t), far(2 - t))):
            matrix[i, min(max(first - 1 + k, 0), size_in - 1)] += weight
    return matrix


def resize_bicubic(x: jax.Array, size: Sequence[int], *, axes: Sequence[int] = (1, 2)) -> jax.Array:
    """``x`` resized to ``size`` along ``axes`` (NHWC images by default) as torch's
    ``F.interpolate(x, size, mode='bicubic', align_corners=False)``: one matrix product per
    axis, in ``x``'s dtype. An axis already of its size is left alone."""
    if len(size) != len(axes):
        raise ValueError(f"resize_bicubic: expected one size per axis {tuple(axes)}, received {tuple(size)}")
    for axis, out in zip(axes, size, strict=True):
        axis = axis % x.ndim
        if x.shape[axis] == out:
            continue
        matrix = jnp.asarray(torch_bicubic_matrix(x.shape[axis], out), x.dtype)
        x = jnp.moveaxis(
            jnp.tensordot(matrix, x, axes=(1, axis), precision=jax.lax.Precision.HIGHEST), 0, axis
        )
    return x
