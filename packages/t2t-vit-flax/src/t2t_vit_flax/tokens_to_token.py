"""The tokens-to-token (T2T) module: soft splits, each followed by a small transformer."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
from einops import rearrange

from vit_layers_flax import Dense, Layer, Transformer, TransformerBlock, unfold
from vit_layers_flax.typing import Array


def t2t_layer_dims(channels: int, t2t_layers: Sequence[tuple[int, int]]) -> list[int]:
    """The token width after each soft split: ``channels * k1**2 * k2**2 * ...``."""
    dims, dim = [], channels
    for kernel_size, _ in t2t_layers:
        dim *= kernel_size**2
        dims.append(dim)
    return dims


class TokensToToken(Layer):
    """``(batch, H, W, channels) -> (batch, tokens, dim)``, the reference's ``to_patch_embedding``.

    For each ``(kernel_size, stride)`` of ``t2t_layers`` the tokens are laid back out as a
    square image (from the second split on) and unfolded with padding ``stride // 2``
    (:func:`vit_layers_flax.unfold`, features in torch's ``(c kh kw)`` order); every split
    but the last is followed by a one-block transformer ``transformers_{i}`` as wide as its
    tokens, with one head of that width (so no ``to_out``) and ``mlp_dim`` that width. A
    Dense ``proj`` maps the last width to ``dim``.
    """

    dim: int
    t2t_layers: Sequence[tuple[int, int]]
    channels: int = 3
    dropout: float = 0.0

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        layer_dims = t2t_layer_dims(self.channels, self.t2t_layers)
        x = img
        for i, ((kernel_size, stride), layer_dim) in enumerate(zip(self.t2t_layers, layer_dims, strict=True)):
            if i > 0:  # the reference's RearrangeImage: a square grid of tokens
                x = rearrange(x, "b (h w) c -> b h w c", h=math.isqrt(x.shape[1]))
            x = unfold(x, kernel_size, stride, stride // 2)
            if i < len(self.t2t_layers) - 1:
                block = functools.partial(
                    TransformerBlock, layer_dim, 1, layer_dim, layer_dim, dropout=self.dropout, **dtypes
                )
                x = Transformer(1, block, name=f"transformers_{i}", **dtypes)(x, train=train)
        return Dense(self.dim, name="proj", **dtypes)(x)
