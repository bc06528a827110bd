"""A LeViT stage: residual blocks of attention and feed-forward on a feature map, then
(between stages) the downsampling block that shrinks and widens the map."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from levit_flax.attention import ConvNormAttention
from levit_flax.feed_forward import HardswishFeedForward
from vit_layers_flax import Layer, Model, apply_blocks
from vit_layers_flax.typing import Array

#: the :class:`Block` options a :class:`Stage` passes to every block (defaults: vit-pytorch's)
BLOCK_OPTIONS = ("bias_over_scale", "attention_activation", "attention_out_bias", "mlp_norm", "drop_path")


def drop_path(rate: float, x: Array, *, train: bool) -> Array:
    """Stochastic depth (timm's ``DropPath``): in training each sample's ``x`` is zeroed with
    probability ``rate``, kept ones scaled by ``1 / (1 - rate)``; the ``'dropout'`` rng."""
    return nn.Dropout(rate, broadcast_dims=tuple(range(1, x.ndim)))(x, deterministic=not train)


class Block(Layer):
    """``x = attn(x) + x; x = ff(x) + x`` on ``(batch, f, f, dim)`` maps, the reference's ``layers.{i}``.

    With ``downsample`` the attention's queries are strided and its output (``dim_out`` wide,
    ``ceil(f / 2)`` high) has no residual. ``attn`` is a :class:`ConvNormAttention`, ``ff`` a
    :class:`HardswishFeedForward`; no norm before either (their BatchNorms take that place).

    timm's block (its ``LevitBlock``, and with ``downsample`` its ``LevitDownsample``) is this
    one with options: ``bias_over_scale``, ``attention_activation`` and ``attention_out_bias``
    go to the attention (its ``bias_over_scale``, ``activation``, ``out_bias``), ``mlp_norm``
    to the feed-forward (its ``norm``), and ``drop_path`` drops each residual branch per
    sample in training (:func:`drop_path`). With ``mlp_norm`` a downsampling block's attention
    output norm starts at one (timm's initialisation: its feed-forward's last norm starts at
    zero, so a zero attention output would make the whole block output zero).
    """

    dim_out: int
    fmap_size: int
    heads: int
    dim_key: int
    dim_value: int
    mlp_mult: int = 2
    dropout: float = 0.0
    downsample: bool = False
    bias_over_scale: bool = True
    attention_activation: str = "gelu"
    attention_out_bias: bool = True
    mlp_norm: bool = False
    drop_path: float = 0.0

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
            bias_over_scale=self.bias_over_scale,
            activation=self.attention_activation,
            out_bias=self.attention_out_bias,
            zero_init_out=not (self.downsample and self.mlp_norm),
            name="attn",
            **dtypes,
        )(x, train=train)
        x = attn if self.downsample else drop_path(self.drop_path, attn, train=train) + x
        ff = HardswishFeedForward(
            self.dim_out, self.mlp_mult, dropout=self.dropout, norm=self.mlp_norm, name="ff", **dtypes
        )
        return drop_path(self.drop_path, ff(x, train=train), train=train) + x


class Stage(Model):
    """``depth`` :class:`Block` s on ``(batch, f, f, dim)`` maps (``layers_{i}``), then, unless
    ``dim_out`` is ``None``, the downsampling block ``downsample`` to ``(batch, ceil(f / 2),
    ceil(f / 2), dim_out)``.

    The downsampling block is the reference's shrinking ``Transformer`` between two stages:
    one block with ``downsample_heads`` heads (``None``: ``2 * heads``) of values
    ``downsample_dim_value`` wide (``None``: ``dim_value``) and strided queries, whose
    ``mlp_mult`` is 2 and dropout 0 whatever the model's (timm's ``LevitDownsample``, which
    opens timm's next stage). With ``return_features`` the stage returns ``(x, map)``,
    ``map`` the blocks' output before the downsampling block (the stage's feature map).
    The :data:`BLOCK_OPTIONS` go to every block.
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
    downsample_heads: int | None = None
    downsample_dim_value: int | None = None
    bias_over_scale: bool = True
    attention_activation: str = "gelu"
    attention_out_bias: bool = True
    mlp_norm: bool = False
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, return_features: bool = False) -> Any:
        shared = dict(
            fmap_size=self.fmap_size,
            dim_key=self.dim_key,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            **{name: getattr(self, name) for name in BLOCK_OPTIONS},
        )

        def stage_block(name: str) -> Block:
            return Block(
                self.dim,
                heads=self.heads,
                dim_value=self.dim_value,
                mlp_mult=self.mlp_mult,
                dropout=self.dropout,
                name=name,
                **shared,
            )

        x = apply_blocks(stage_block, self.depth, x, train=train, scan=self.scan, remat=self.remat)
        if self.dim_out is None:
            return (x, x) if return_features else x
        fmap = x

        def downsample(_: str) -> Block:  # one block, named for what it does
            return Block(
                self.dim_out,
                heads=2 * self.heads if self.downsample_heads is None else self.downsample_heads,
                dim_value=self.dim_value if self.downsample_dim_value is None else self.downsample_dim_value,
                downsample=True,
                name="downsample",
                **shared,
            )

        x = apply_blocks(downsample, 1, x, train=train, remat=self.remat)
        return (x, fmap) if return_features else x
