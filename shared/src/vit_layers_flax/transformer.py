"""The pre-norm transformer encoder stack shared by the flat-token models."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.attention import Attention
from vit_layers_flax.feed_forward import FeedForward
from vit_layers_flax.layer_norm import LayerNorm
from vit_layers_flax.typing import Array, Dtype

#: ``nn.scan`` traces the block a second time to check that broadcast variables are loop
#: invariants, unless told not to (Flax >= 0.10.3). ``apply_blocks`` broadcasts none, so it
#: skips that trace: a deep seed's train step traces in 2.9 instead of 3.5 s (CrossFormer).
_SCAN_TRACE_ONCE = (
    {"check_constancy_invariants": False}
    if "check_constancy_invariants" in inspect.signature(nn.scan).parameters
    else {}
)


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
    ``depth`` axis (``layers`` instead of ``layers_0`` ...; :func:`apply_blocks`): the
    same outputs, one block to compile instead of ``depth``. :func:`vit_layers_flax.stack_layers` turns one layout
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
        x = apply_blocks(
            lambda name: block_cls(self.dim, self.heads, self.dim_head, self.mlp_dim, name=name, **fields),
            self.depth,
            x,
            train=train,
            scan=self.scan,
        )
        if self.final_norm:
            x = LayerNorm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x


def apply_blocks(
    make_block: Callable[[str], nn.Module],
    depth: int,
    x: Any,
    *args: Any,
    train: bool,
    scan: bool = False,
    start: int = 0,
) -> Any:
    """``x`` through ``depth`` identical blocks: ``x = make_block(name)(x, *args, train)``.

    ``x`` (an array or a tuple of arrays) keeps its shapes from block to block; ``args``
    (e.g. a shared attention bias) are the same for every block. Without ``scan`` the
    blocks are ``layers_{start}`` ... ``layers_{start + depth - 1}``, run in a Python loop
    (``start`` numbers on after blocks the caller built itself, e.g. a first block that
    differs). With ``scan`` they are one ``nn.scan`` over a single block named ``layers``:
    every variable of it (parameters, BatchNorm statistics) gets a leading ``depth`` axis,
    each step draws its own initialisation and dropout keys, and the block is traced and
    compiled once instead of ``depth`` times (and traced once per call: the scan skips
    Flax's extra trace that checks broadcast variables, of which it has none). Call it
    from a compact method.
    """
    if not scan or depth == 0:  # (a scan of length 0 would still create parameters)
        for i in range(start, start + depth):
            x = make_block(f"layers_{i}")(x, *args, train)
        return x
    x, _ = nn.scan(
        lambda module, carry, _: (module(carry, *args, train), None),
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True, "dropout": True},
        length=depth,
        **_SCAN_TRACE_ONCE,
    )(make_block("layers"), x, None)
    return x
