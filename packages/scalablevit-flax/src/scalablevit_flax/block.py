"""One ScalableViT block: SSA, feed-forward, (PEG), feed-forward, IWSA."""

from __future__ import annotations

import flax.linen as nn

from scalablevit_flax.attention import InteractiveWindowedSelfAttention, ScalableSelfAttention
from vit_layers_flax import PEG, FeedForward, Layer
from vit_layers_flax.typing import Array


class ScalableBlock(Layer):
    """One layer of vit-pytorch's ``scalable_vit.Transformer``: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    With residual connections: ``ssa`` (:class:`ScalableSelfAttention`, the reference's
    ``layers.{i}.0``), ``ff1`` (``.1``), ``peg`` (the positional encoding generator, ``.2``,
    where ``peg=True``: a stage's first block), ``ff2`` (``.3``) and ``iwsa``
    (:class:`InteractiveWindowedSelfAttention`, ``.4``); the feed-forwards are
    ``ff_expansion_factor`` times as wide as ``dim``.
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

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attention = dict(
            heads=self.heads, dropout=self.dropout, implementation=self.attention_implementation, **dtypes
        )
        ssa = ScalableSelfAttention(
            self.dim,
            dim_key=self.ssa_dim_key,
            dim_value=self.ssa_dim_value,
            reduction_factor=self.ssa_reduction_factor,
            name="ssa",
            **attention,
        )
        iwsa = InteractiveWindowedSelfAttention(
            self.dim,
            dim_key=self.iwsa_dim_key,
            dim_value=self.iwsa_dim_value,
            window_size=self.iwsa_window_size,
            name="iwsa",
            **attention,
        )
        hidden = self.dim * self.ff_expansion_factor
        ff1 = FeedForward(self.dim, hidden, dropout=self.dropout, name="ff1", **dtypes)
        ff2 = FeedForward(self.dim, hidden, dropout=self.dropout, name="ff2", **dtypes)

        # The reference's forward unpacks each layer as `ssa, ff1, peg, iwsa, ff2`, but the
        # layer holds, by index, 0 SSA, 1 FeedForward, 2 PEG, 3 FeedForward, 4 IWSA: so what
        # it calls `iwsa` is the second feed-forward and `ff2` the IWSA. They run in index
        # order, here too, named by what they are.
        x = x + ssa(x, train=train)
        x = x + ff1(x, train=train)
        if self.peg:
            x = PEG(name="peg", **dtypes)(x)  # proj(x) + x: the residual is inside
        x = x + ff2(x, train=train)
        return x + iwsa(x, train=train)
