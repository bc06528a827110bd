"""The block stack every model uses (:func:`apply_blocks`) and the pre-norm transformer built on it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

from vit_layers_flax.attention import Attention
from vit_layers_flax.feed_forward import FeedForward
from vit_layers_flax.layer_norm import LayerNorm
from vit_layers_flax.module import Layer, Model
from vit_layers_flax.typing import Array

#: ``nn.scan`` traces its body a second time to check that broadcast variables are loop
#: invariants, unless told not to (Flax >= 0.10.3); :func:`apply_blocks` broadcasts none.
_SCAN_TRACE_ONCE = (
    {"check_constancy_invariants": False}
    if "check_constancy_invariants" in inspect.signature(nn.scan).parameters
    else {}
)


def apply_blocks(
    make_block: Callable[[str], nn.Module],
    depth: int,
    x: Any,
    *args: Any,
    train: bool,
    scan: bool = False,
    remat: bool = False,
    per_layer: Sequence[Array | None] = (),
    start: int = 0,
    collect: bool = False,
) -> Any:
    """``x`` through ``depth`` blocks: ``x = block(x, *args, *per_layer[i], train=train)``.

    ``make_block(name)`` builds a block; ``x`` (an array or a tuple of arrays) keeps its
    shapes from block to block; ``args`` are the same for every block; ``per_layer`` holds
    arrays with a leading ``depth`` axis (or ``None``) of which block ``i`` gets row ``i``.
    Without ``scan`` the blocks are ``layers_{start}`` ... (``start`` numbers on after blocks
    the caller built itself). With ``scan`` they are one ``nn.scan`` over a block ``layers``
    whose variables carry a leading ``depth`` axis: compiled once instead of ``depth`` times.
    ``remat`` recomputes each block's activations in the backward pass. ``collect`` returns
    ``(x, outputs)``, ``outputs`` a tuple of every block's output (for feature maps). Call
    from a compact method.
    """

    def call(block: nn.Module, x: Any, *inputs: Any) -> Any:
        return block(x, *args, *inputs, train=train)

    if remat:  # under scan, CSE cannot undo the rematerialisation (Flax's advice)
        call = nn.remat(call, prevent_cse=not scan)
    per_layer = tuple(per_layer)
    if not scan or depth == 0:  # (a scan of length 0 would still create parameters)
        outputs = []
        for i in range(depth):
            inputs = tuple(None if a is None else a[i] for a in per_layer)
            x = call(make_block(f"layers_{start + i}"), x, *inputs)
            outputs.append(x)
        return (x, tuple(outputs)) if collect else x

    def body(block: nn.Module, carry: Any, inputs: Any) -> tuple[Any, Any]:
        carry = call(block, carry, *inputs)
        return carry, carry if collect else None

    x, stacked = nn.scan(
        body,
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True, "dropout": True},
        length=depth,
        **_SCAN_TRACE_ONCE,
    )(make_block("layers"), x, per_layer)
    if collect:
        return x, tuple(jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(depth))
    return x


class TransformerBlock(Layer):
    """``x + attn(x)``, then ``x + ff(x)``: ``(batch, tokens, dim)`` in and out.

    ``attention`` builds the attention as ``attention(dim, heads=, dim_head=, dropout=,
    dtype=, param_dtype=, name='attn')`` (a class, or a ``functools.partial`` of one), so
    re-attention, talking heads or LSA reuse this block; ``feed_forward`` builds the MLP as
    ``feed_forward(dim, mlp_dim, dropout=, dtype=, param_dtype=, name='ff')`` the same way.
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    attention: Callable[..., nn.Module] = Attention
    feed_forward: Callable[..., nn.Module] = FeedForward

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = self.attention(
            self.dim, heads=self.heads, dim_head=self.dim_head, dropout=self.dropout, name="attn", **dtypes
        )
        x = x + attn(x, train=train)
        ff = self.feed_forward(self.dim, self.mlp_dim, dropout=self.dropout, name="ff", **dtypes)
        return x + ff(x, train=train)


class Transformer(Model):
    """``depth`` blocks (:func:`apply_blocks`), then a LayerNorm ``norm`` unless ``final_norm=False``.

    ``block`` builds one block from a ``name`` (a :class:`TransformerBlock` partial, or an
    architecture's own block called as ``block(x, train=)``). ``return_features=True`` also
    returns every block's output (before the final norm): ``(x, outputs)``. ``norm_epsilon``
    is the final norm's.
    """

    depth: int
    block: Callable[..., nn.Module]
    final_norm: bool = True
    norm_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False, return_features: bool = False) -> Any:
        make_block = lambda name: self.block(name=name)  # noqa: E731
        out = apply_blocks(
            make_block, self.depth, x, train=train, scan=self.scan, remat=self.remat, collect=return_features
        )
        x, outputs = out if return_features else (out, None)
        if self.final_norm:
            x = LayerNorm(
                epsilon=self.norm_epsilon, name="norm", dtype=self.dtype, param_dtype=self.param_dtype
            )(x)
        return (x, outputs) if return_features else x
