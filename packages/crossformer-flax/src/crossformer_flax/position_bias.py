"""CrossFormer's dynamic position bias (DPB): an MLP from relative offsets to attention biases."""

from __future__ import annotations

import flax.linen as nn
import numpy as np
from einops import rearrange

from vit_layers_flax import Dense, Layer, LayerNorm
from vit_layers_flax.typing import Array


def relative_positions(window_size: int) -> np.ndarray:
    """The ``(2w + 1) ** 2`` offsets ``(dy, dx)`` in ``[-w, w]`` the reference feeds the MLP.

    ``-> ((2w + 1) ** 2, 2)`` float32, row-major in ``(dy, dx)`` (``meshgrid(indexing='ij')``):
    entry ``k`` is ``(k // (2w + 1) - w, k % (2w + 1) - w)``.
    """
    pos = np.arange(-window_size, window_size + 1)
    grid = np.stack(np.meshgrid(pos, pos, indexing="ij"))
    return rearrange(grid, "c i j -> (i j) c").astype(np.float32)


def relative_position_indices(window_size: int) -> np.ndarray:
    """The reference's ``rel_pos_indices`` buffer: ``(w * w, w * w)`` int32, copied exactly.

    For query ``i`` and key ``j`` of a ``w x w`` window (row-major), with
    ``(dy, dx) = pos_i - pos_j`` in ``[-(w - 1), w - 1]``, the index is
    ``(dy + w - 1) * (2w - 1) + (dx + w - 1)``: a position in a ``(2w - 1) ** 2`` table.

    Quirk of the reference, copied for parity: the table it indexes, the MLP's output on
    :func:`relative_positions`, has ``(2w + 1) ** 2`` entries with row stride ``2w + 1``, so
    an index does not pick the bias of its own offset (index ``0``, for ``(-(w - 1), -(w - 1))``,
    picks that of ``(-w, -w)``) and only the first ``(2w - 1) ** 2`` entries are ever used.
    """
    pos = np.arange(window_size)
    grid = np.stack(np.meshgrid(pos, pos, indexing="ij"))
    grid = rearrange(grid, "c i j -> (i j) c")
    rel_pos = grid[:, None] - grid[None, :] + window_size - 1
    return (rel_pos * np.array([2 * window_size - 1, 1])).sum(axis=-1).astype(np.int32)


class DynamicPositionBias(Layer):
    """vit-pytorch ``crossformer.DynamicPositionBias``: ``(n, 2) offsets -> (n,)`` biases.

    Three ``Dense(dim) -> LayerNorm -> ReLU`` layers and a ``Dense(1)``, one bias shared by
    all heads. Parameters ``fc_0``, ``norm_0``, ``fc_1``, ``norm_1``, ``fc_2``, ``norm_2``,
    ``fc_3`` (the reference's ``Sequential`` indices 0, 1, 3, 4, 6, 7, 9).
    """

    dim: int

    @nn.compact
    def __call__(self, rel_pos: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = rel_pos
        for i in range(3):
            x = Dense(self.dim, name=f"fc_{i}", **dtypes)(x)
            x = LayerNorm(name=f"norm_{i}", **dtypes)(x)
            x = nn.relu(x)
        return rearrange(Dense(1, name="fc_3", **dtypes)(x), "... 1 -> ...")
