"""A LeViT stage: blocks of attention and feed-forward on a feature map, as the reference's ``Transformer``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from levit_flax.attention import Attention
from levit_flax.feed_forward import FeedForward
from vit_layers_flax import apply_blocks
from vit_layers_flax.typing import Array, Dtype


class Block(nn.Module):
    """``x = attn(x) [+ x]; x = ff(x) + x`` on ``(batch, f, f, dim)`` maps.

    The attention residual is present only when ``attn_residual`` (the reference drops it
    in the shrinking block, whose output has another size and width). Parameters ``attn``
    (:class:`~levit_flax.Attention`) and ``ff`` (:class:`~levit_flax.FeedForward`), the
    reference's ``layers.{i}.0`` and ``layers.{i}.1``. No normalisation before the
    branches: the BatchNorms inside them take that place.
    """

    dim_out: int
    fmap_size: int
    heads: int
    dim_key: int
    dim_value: int
    mlp_mult: int = 2
    dropout: float = 0.0
    downsample: bool = False
    attn_residual: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = Attention(
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
        x = attn + x if self.attn_residual else attn
        ff = FeedForward(self.dim_out, self.mlp_mult, dropout=self.dropout, name="ff", **dtypes)
        return ff(x, train=train) + x


class Transformer(nn.Module):
    """``depth`` :class:`Block` s: ``(batch, f, f, dim) -> (batch, f', f', dim_out)``.

    As the reference's ``Transformer``: ``dim_out`` defaults to ``dim``; with ``downsample``
    the (first) attention's query is strided, so ``f' = ceil(f / 2)``; the attention
    residual is kept only when the block neither downsamples nor changes the width.
    Parameters ``layers_{i}`` (the reference's ``layers.{i}``). ``remat`` rematerialises
    each block in the backward pass (same results, less memory). ``scan`` runs the blocks
    as one ``nn.scan`` (parameters and statistics stacked under ``layers``) where they are
    identical, i.e. when the stage neither downsamples nor changes the width.
    """

    dim: int
    fmap_size: int
    depth: int
    heads: int
    dim_key: int
    dim_value: int
    mlp_mult: int = 2
    dropout: float = 0.0
    dim_out: int | None = None
    downsample: bool = False
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dim_out = self.dim if self.dim_out is None else self.dim_out
        identical = not self.downsample and self.dim == dim_out
        block_cls = Block
        if self.remat:  # (self, x, train)
            block_cls = nn.remat(block_cls, static_argnums=(2,), prevent_cse=not (self.scan and identical))
        return apply_blocks(
            lambda name: block_cls(
                dim_out,
                self.fmap_size,
                self.heads,
                self.dim_key,
                self.dim_value,
                mlp_mult=self.mlp_mult,
                dropout=self.dropout,
                downsample=self.downsample,
                attn_residual=identical,
                name=name,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            ),
            self.depth,
            x,
            train=train,
            scan=self.scan and identical,
        )
