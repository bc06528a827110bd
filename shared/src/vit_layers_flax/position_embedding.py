"""Fixed 2-D sine-cosine position embedding (SimpleViT, "Better plain ViT baselines")."""

from __future__ import annotations

import numpy as np


def posemb_sincos_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """``-> (height * width, dim)`` float32 constant, rows in row-major ``(h w)`` order.

    Features are ``[sin(x), cos(x), sin(y), cos(y)]``, each ``dim // 4`` wide, exactly as
    vit-pytorch's ``posemb_sincos_2d``. Computed with numpy so it is a compile-time constant.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, received dim={dim}")
    if dim < 8:
        raise ValueError(f"sin-cos position embedding needs dim >= 8, received dim={dim}")
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    omega = np.arange(dim // 4, dtype=np.float32) / (dim // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = y.reshape(-1)[:, None].astype(np.float32) * omega[None, :]
    x = x.reshape(-1)[:, None].astype(np.float32) * omega[None, :]
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)
