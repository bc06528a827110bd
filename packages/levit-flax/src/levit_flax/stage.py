"""A LeViT stage: residual blocks of attention and feed-forward on a feature map, then
(between stages) the downsampling block that shrinks and widens the map."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from levit_flax.attention import ConvNormAttention
from levit_flax.feed_forward import HardswishFeedForward
from vit_layers_flax import Layer, Model, apply_blocks
from vit_layers_flax.typing import Array


class Block(Layer):
    """``x = attn(x) + x; x = ff(x) + x`` on ``(batch, f, f, dim)`` maps, the reference's ``layers.{i}``.

    With ``downsample`` the attention's queries are strided and its output (``dim_out`` wide,
    ``ceil(f / 2)`` high) has no residual. ``attn`` is a :class:`ConvNormAttention`, ``ff`` a
    :class:`HardswishFeedForward`; no norm before either (their BatchNorms take that place).
    """

    dim_out: int
    fmap_size: int
    heads: int
    dim_key: int
    dim_value: int
    mlp_mult: int = 2
    dropout: float = 0.0
    downsample: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = ConvNormAttention(
            self.dim_out,
            self.fmap_size,
            heads=self.heads,
            dim_key=self.dim_key,
            dim_value=self.dim_value,
            dropout=self.dropout,
            downsample=self.downsample,
            name="attn",
            **dtypes,
        )(x, train=train)
        x = attn if self.downsample else attn + x
        ff = HardswishFeedForward(self.dim_out, self.mlp_mult, dropout=self.dropout, name="ff", **dtypes)
        return ff(x, train=train) + x


class Stage(Model):
    """``depth`` :class:`Block` s on ``(batch, f, f, dim)`` maps (``layers_{i}``), then, unless
    ``dim_out`` is ``None``, the downsampling block ``downsample`` to ``(batch, ceil(f / 2),
    ceil(f / 2), dim_out)``.

    The downsampling block is the reference's shrinking ``Transformer`` between two stages:
    one block with ``2 * heads`` heads and strided queries, whose ``mlp_mult`` is 2 and
    dropout 0 whatever the model's. With ``return_features`` the stage returns ``(x, map)``,
    ``map`` the blocks' output before the downsampling block (the stage's feature map).
    """

    dim: int
    fmap_size: int
    depth: int
    heads: int
    dim_key: int
    dim_value: int
    mlp_mult: int
    dropout: float = 0.0
    dim_out: int | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, return_features: bool = False) -> Any:
        shared = dict(
            fmap_size=self.fmap_size,
            dim_key=self.dim_key,
            dim_value=self.dim_value,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

        def stage_block(name: str) -> Block:
            return Block(
                self.dim, heads=self.heads, mlp_mult=self.mlp_mult, dropout=self.dropout, name=name, **shared
            )

        x = apply_blocks(stage_block, self.depth, x, train=train, scan=self.scan, remat=self.remat)
        if self.dim_out is None:
            return (x, x) if return_features else x
        fmap = x

        def downsample(_: str) -> Block:  # one block, named for what it does
            return Block(self.dim_out, heads=2 * self.heads, downsample=True, name="downsample", **shared)

        x = apply_blocks(downsample, 1, x, train=train, remat=self.remat)
        return (x, fmap) if return_features else x
