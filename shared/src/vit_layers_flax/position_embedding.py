"""Position embeddings: the fixed 2-D sine-cosine one (SimpleViT) and the learned ViT stem."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vit_layers_flax.typing import Array, Dtype


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


class TokenEmbedding(nn.Module):
    """The ViT stem after the patch projection: class tokens, a learned position embedding, dropout.

    ``(batch, n, dim) -> (batch, num_class_tokens + n, dim)``: ``num_class_tokens`` learned
    tokens (``cls_token``, ``(num_class_tokens, dim)``; none when 0) are prepended, the first
    rows of the position embedding (``pos_embedding``, ``(num_positions, dim)``, by default
    ``num_class_tokens + n``) added, and ``dropout`` applied in training. Both are
    initialised ``N(0, 1)``, as ``torch.randn``.
    """

    num_class_tokens: int = 1
    dropout: float = 0.0
    num_positions: int | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        batch, _, dim = x.shape
        init = nn.initializers.normal(stddev=1.0)
        if self.num_class_tokens:
            cls_token = self.param("cls_token", init, (self.num_class_tokens, dim), self.param_dtype)
            cls_tokens = jnp.broadcast_to(cls_token.astype(x.dtype), (batch, self.num_class_tokens, dim))
            x = jnp.concatenate([cls_tokens, x], axis=1)
        rows = x.shape[1] if self.num_positions is None else self.num_positions
        if rows < x.shape[1]:
            raise ValueError(
                f"TokenEmbedding: {rows} positions for {x.shape[1]} tokens, input shape {x.shape}"
            )
        pos_embedding = self.param("pos_embedding", init, (rows, dim), self.param_dtype)
        x = x + pos_embedding[: x.shape[1]].astype(x.dtype)
        return nn.Dropout(self.dropout)(x, deterministic=not train)


def pool_tokens(x: Array, pool: str) -> Array:
    """``(batch, tokens, dim) -> (batch, dim)``: the first (class) token for ``'cls'``, the
    mean over tokens for ``'mean'``."""
    if pool == "cls":
        return x[:, 0]
    if pool == "mean":
        return x.mean(axis=1)
    raise ValueError(f"pool must be 'cls' or 'mean', received {pool!r}")
