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
    in the backward pass (less activation memory, same outputs). ``scan=True`` runs the
    blocks as one ``nn.scan`` over a single block whose parameters carry a leading
    ``depth`` axis (``layers`` instead of ``layers_0`` ...): the same outputs, one block
    to compile instead of ``depth``. :func:`vit_layers_flax.stack_layers` turns one layout
    into the other, and the packages' converters produce either. ``attention_cls`` and
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
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        block_cls = self.block_cls
        if self.remat:  # under scan, CSE cannot undo the rematerialisation (flax's advice)
            block_cls = nn.remat(block_cls, static_argnums=(2,), prevent_cse=not self.scan)
        fields = dict(
            dropout=self.dropout,
            attention_cls=self.attention_cls,
            attention_kwargs=self.attention_kwargs,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            **(self.block_kwargs or {}),
        )
        if self.scan and self.depth > 0:  # (a scan of length 0 would still create parameters)
            block = block_cls(self.dim, self.heads, self.dim_head, self.mlp_dim, name="layers", **fields)
            x, _ = scan_blocks(block, x, self.depth, train)
        else:
            for i in range(self.depth):
                block = block_cls(
                    self.dim, self.heads, self.dim_head, self.mlp_dim, name=f"layers_{i}", **fields
                )
                x = block(x, train)
        if self.final_norm:
            x = LayerNorm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x


def scan_blocks(block: nn.Module, x: Array, depth: int, train: bool) -> tuple[Array, None]:
    """``x = block_i(x, train)`` for ``i < depth`` as one ``nn.scan``: every variable of
    ``block`` (parameters, BatchNorm statistics) gets a leading ``depth`` axis, and each
    step draws its own initialisation and dropout keys."""
    return nn.scan(
        lambda module, carry, _: (module(carry, train), None),
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True, "dropout": True},
        length=depth,
    )(block, x, None)
