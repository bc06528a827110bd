"""The pre-norm transformer encoder stack shared by the flat-token models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.attention import Attention
from vit_layers_flax.feed_forward import FeedForward
from vit_layers_flax.layer_norm import LayerNorm
from vit_layers_flax.typing import Array, Dtype


class TransformerBlock(nn.Module):
    """``x + attention(x)``, then ``x + FeedForward(x)``; ``(batch, tokens, dim)`` in and out.

    ``attention_cls`` is the attention module class (default :class:`Attention`); it is
    constructed as ``attention_cls(dim, heads=, dim_head=, dropout=, dtype=, param_dtype=,
    **attention_kwargs)`` and called as ``attn(x, train=train)``, so architectures with
    their own attention (re-attention, talking heads, LSA) reuse this block and the stack.
    Parameters: ``attn`` and ``ff``.
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    attention_cls: Any = Attention
    attention_kwargs: Mapping[str, Any] | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = self.attention_cls(
            self.dim,
            heads=self.heads,
            dim_head=self.dim_head,
            dropout=self.dropout,
            name="attn",
            **dtypes,
            **(self.attention_kwargs or {}),
        )
        x = x + attn(x, train=train)
        ff = FeedForward(self.dim, self.mlp_dim, dropout=self.dropout, name="ff", **dtypes)
        return x + ff(x, train=train)


class Transformer(nn.Module):
    """``depth`` :class:`TransformerBlock` s (``layers_0`` ...), then a final LayerNorm ``norm``.

    ``(batch, tokens, dim) -> (batch, tokens, dim)``. ``final_norm=False`` drops the final
    LayerNorm (DeepViT, vit_for_small_dataset). ``remat=True`` rematerialises each block
    in the backward pass (less activation memory, same outputs). ``attention_cls`` and
    ``attention_kwargs`` are passed to every block. ``block_cls`` replaces the block
    (constructed with :class:`TransformerBlock`'s fields plus ``block_kwargs`` and called as
    ``block(x, train)``), for architectures whose blocks differ but stack the same way.
    """

    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    final_norm: bool = True
    attention_cls: Any = Attention
    attention_kwargs: Mapping[str, Any] | None = None
    block_cls: Any = TransformerBlock
    block_kwargs: Mapping[str, Any] | None = None
    remat: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        block_cls = nn.remat(self.block_cls, static_argnums=(2,)) if self.remat else self.block_cls
        for i in range(self.depth):
            x = block_cls(
                self.dim,
                self.heads,
                self.dim_head,
                self.mlp_dim,
                dropout=self.dropout,
                attention_cls=self.attention_cls,
                attention_kwargs=self.attention_kwargs,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"layers_{i}",
                **(self.block_kwargs or {}),
            )(x, train)
        if self.final_norm:
            x = LayerNorm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x
