"""The local windows' relative position bias indices (the reference's ``bias_indices``)."""

from __future__ import annotations

import numpy as np


def local_rel_pos_indices(window: tuple[int, int], window_size: int) -> np.ndarray:
    """``(wh * ww, wh * ww)`` indices into the ``((2 * window_size - 1) ** 2, heads)`` bias table.

    For local tokens ``i``, ``j`` of a ``wh x ww`` window (row-major) at rows ``r``, columns
    ``c``, the index is ``(r_i - r_j + window_size - 1) + (c_i - c_j + window_size - 1) *
    (2 * window_size - 1)``. Quirk of the reference, kept: the row offset has stride 1 and the
    column offset stride ``2 * window_size - 1`` (the transpose of the usual layout); the table
    is sized for ``window_size`` even when the window is smaller (a ``1 x 1`` regional grid at a
    late stage gives ``ceil(window_size / 2)``-sized windows), which then use part of it.
    A numpy constant: nothing is computed per window or per call.
    """
    wh, ww = window
    grid = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    offsets = grid[:, :, None] - grid[:, None, :] + (window_size - 1)
    # the reference's quirk: rows with stride 1, columns with stride 2 * window_size - 1
    return offsets[0] * 1 + offsets[1] * (2 * window_size - 1)
