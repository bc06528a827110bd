"""The parallel-branch transformer block of vit-pytorch's ``parallel_vit.py``."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from vit_layers_flax import Attention, FeedForward, Layer
from vit_layers_flax.typing import Array


class ParallelTransformerBlock(Layer):
    """``x + sum_j attn_j(x)``, then ``x + sum_j ff_j(x)`` over ``num_parallel_branches`` branches.

    ``(batch, tokens, dim) -> (batch, tokens, dim)``. Each branch is a pre-norm attention
    (built by ``attention`` as in :class:`~vit_layers_flax.TransformerBlock`) or
    :class:`~vit_layers_flax.FeedForward` with weights of its own, all reading the same input
    (the reference's ``Parallel``). Parameters ``attn_0`` ... and ``ff_0`` ... (the reference's
    ``layers.{i}.0.fns.{j}`` and ``layers.{i}.1.fns.{j}``).
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    attention: Callable[..., nn.Module] = Attention
    num_parallel_branches: int = 2

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        branches = range(self.num_parallel_branches)
        attns = [
            self.attention(
                self.dim,
                heads=self.heads,
                dim_head=self.dim_head,
                dropout=self.dropout,
                name=f"attn_{j}",
                **dtypes,
            )
            for j in branches
        ]
        x = x + sum(attn(x, train=train) for attn in attns)
        ffs = [
            FeedForward(self.dim, self.mlp_dim, dropout=self.dropout, name=f"ff_{j}", **dtypes)
            for j in branches
        ]
        return x + sum(ff(x, train=train) for ff in ffs)
