"""ScalableViT's stage transformer: blocks of SSA, feed-forward, (PEG), feed-forward, IWSA."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from scalablevit_flax.interactive_windowed_attention import InteractiveWindowedSelfAttention
from scalablevit_flax.scalable_self_attention import ScalableSelfAttention
from vit_layers_flax import PEG, ChanLayerNorm, FeedForward, apply_blocks
from vit_layers_flax.typing import Array, Dtype


class ScalableBlock(nn.Module):
    """One layer of vit-pytorch's ``scalable_vit.Transformer``: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    Runs, each with a residual connection, ``ssa`` (:class:`ScalableSelfAttention`, the
    reference's ``layers.{i}.0``), ``ff1`` (feed-forward, ``.1``), ``peg`` (the positional
    encoding generator, ``.2``, only where ``peg=True``: the first layer of a stage; it holds
    its own residual), ``ff2`` (feed-forward, ``.3``) and ``iwsa``
    (:class:`InteractiveWindowedSelfAttention`, ``.4``). The feed-forwards are the reference's
    conv feed-forward (channel LayerNorm, 1 x 1 convs, exact GELU) as the shared
    :class:`vit_layers_flax.FeedForward` on the channel axis, hidden width ``dim *
    ff_expansion_factor``.
    """

    dim: int
    heads: int
    ff_expansion_factor: int = 4
    dropout: float = 0.0
    ssa_dim_key: int = 32
    ssa_dim_value: int = 32
    ssa_reduction_factor: int = 1
    iwsa_dim_key: int = 32
    iwsa_dim_value: int = 32
    iwsa_window_size: int | None = None
    peg: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hidden = self.dim * self.ff_expansion_factor
        ssa = ScalableSelfAttention(
            self.dim,
            heads=self.heads,
            dim_key=self.ssa_dim_key,
            dim_value=self.ssa_dim_value,
            dropout=self.dropout,
            reduction_factor=self.ssa_reduction_factor,
            implementation=self.attention_implementation,
            name="ssa",
            **dtypes,
        )
        iwsa = InteractiveWindowedSelfAttention(
            self.dim,
            self.iwsa_window_size,
            heads=self.heads,
            dim_key=self.iwsa_dim_key,
            dim_value=self.iwsa_dim_value,
            dropout=self.dropout,
            implementation=self.attention_implementation,
            name="iwsa",
            **dtypes,
        )
        ff1 = FeedForward(self.dim, hidden, dropout=self.dropout, name="ff1", **dtypes)
        ff2 = FeedForward(self.dim, hidden, dropout=self.dropout, name="ff2", **dtypes)

        # Quirk of the reference, reproduced: its forward unpacks each layer as
        # `for ssa, ff1, peg, iwsa, ff2 in self.layers`, but the layer's modules are, by index,
        # 0 SSA, 1 FeedForward, 2 PEG, 3 FeedForward, 4 IWSA. So what it calls `iwsa` is the
        # second feed-forward and what it calls `ff2` is the IWSA: the blocks run in index
        # order SSA -> FF -> PEG -> FF -> IWSA, and so do they here.
        x = x + ssa(x, train=train)  # layers.{i}.0
        x = x + ff1(x, train=train)  # layers.{i}.1
        if self.peg:
            x = PEG(name="peg", **dtypes)(x)  # layers.{i}.2: proj(x) + x, residual inside
        x = x + ff2(x, train=train)  # layers.{i}.3, the reference's "iwsa"
        return x + iwsa(x, train=train)  # layers.{i}.4, the reference's "ff2"


class ScalableTransformer(nn.Module):
    """vit-pytorch's ``scalable_vit.Transformer``: ``depth`` :class:`ScalableBlock` s (``layers_{i}``,
    a PEG in the first only), then a channel LayerNorm ``norm`` (``g``/``b``) when ``norm_output``.

    ``(batch, H, W, dim) -> (batch, H, W, dim)``. ``remat=True`` rematerialises each block
    in the backward pass (less activation memory, same results). ``scan=True`` keeps the
    first block (the one with the PEG) as ``layers_0`` and runs the other ``depth - 1``, which
    are identical, as one ``nn.scan`` whose parameters carry a leading axis (``layers``; see
    :func:`vit_layers_flax.apply_blocks`): the same outputs, one block compiled instead of
    ``depth - 1``.
    """

    dim: int
    depth: int
    heads: int = 8
    ff_expansion_factor: int = 4
    dropout: float = 0.0
    ssa_dim_key: int = 32
    ssa_dim_value: int = 32
    ssa_reduction_factor: int = 1
    iwsa_dim_key: int = 32
    iwsa_dim_value: int = 32
    iwsa_window_size: int | None = None
    norm_output: bool = True
    attention_implementation: str | None = None
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_cls = ScalableBlock
        if self.remat:  # under scan, CSE cannot undo the rematerialisation (flax's advice)
            block_cls = nn.remat(block_cls, static_argnums=(2,), prevent_cse=not self.scan)

        def make_block(name: str, peg: bool = False) -> nn.Module:
            return block_cls(
                self.dim,
                self.heads,
                ff_expansion_factor=self.ff_expansion_factor,
                dropout=self.dropout,
                ssa_dim_key=self.ssa_dim_key,
                ssa_dim_value=self.ssa_dim_value,
                ssa_reduction_factor=self.ssa_reduction_factor,
                iwsa_dim_key=self.iwsa_dim_key,
                iwsa_dim_value=self.iwsa_dim_value,
                iwsa_window_size=self.iwsa_window_size,
                peg=peg,
                attention_implementation=self.attention_implementation,
                name=name,
                **dtypes,
            )

        if self.depth > 0:
            x = make_block("layers_0", peg=True)(x, train)
            x = apply_blocks(make_block, self.depth - 1, x, train=train, scan=self.scan, start=1)
        if self.norm_output:
            x = ChanLayerNorm(name="norm", **dtypes)(x)
        return x
