"""CaiT's transformer stack: LayerScale'd pre-norm blocks with talking-heads attention and layer dropout."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from cait_flax.layer_scale import LayerScale, layer_scale_init_eps
from cait_flax.talking_heads import TalkingHeadsAttention
from vit_layers_flax import FeedForward, layer_keep_mask
from vit_layers_flax.typing import Array, Dtype


class LayerScaleBlock(nn.Module):
    """``x + keep * LayerScale(attention(x, context))``, then ``x + keep * LayerScale(FeedForward(x))``.

    ``x: (batch, tokens, dim)``, ``context: (batch, ctx_tokens, dim) | None`` ``-> (batch, tokens, dim)``.

    ``depth`` is the block's 1-based position in its stack (it sets the LayerScale init);
    a scanned block leaves it unset and receives that initial value as ``init_eps``.
    ``keep`` is this block's traced 0/1 flag from :func:`vit_layers_flax.layer_keep_mask`
    (``None``: always kept); a dropped block still computes, its branches are multiplied
    by 0. Parameters: ``attn``, ``attn_scale``, ``ff``, ``ff_scale`` (the reference's
    ``layers.{i}.0.fn``, ``layers.{i}.0.scale``, ``layers.{i}.1.fn``, ``layers.{i}.1.scale``).
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    depth: int | None = None
    dropout: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: Array,
        context: Array | None = None,
        keep: Array | None = None,
        train: bool = False,
        init_eps: Array | None = None,
    ) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        keep = None if keep is None else keep.astype(x.dtype)

        def residual(x: Array, branch: Array) -> Array:
            return x + (branch if keep is None else keep * branch).astype(x.dtype)

        attn = TalkingHeadsAttention(
            self.dim, self.heads, self.dim_head, dropout=self.dropout, name="attn", **dtypes
        )
        x = residual(
            x,
            LayerScale(self.dim, self.depth, name="attn_scale", **dtypes)(
                attn(x, context, train=train), init_eps
            ),
        )
        ff = FeedForward(self.dim, self.mlp_dim, dropout=self.dropout, name="ff", **dtypes)
        return residual(
            x, LayerScale(self.dim, self.depth, name="ff_scale", **dtypes)(ff(x, train=train), init_eps)
        )


class LayerScaleTransformer(nn.Module):
    """``depth`` :class:`LayerScaleBlock` s (``layers_0`` ...), no final norm.

    ``x: (batch, tokens, dim)``, ``context: (batch, ctx_tokens, dim) | None`` ``-> (batch, tokens, dim)``.

    With ``context`` every block's attention reads keys and values from
    ``[norm(x), context]`` (CaiT's class-attention stage); ``context`` itself is not
    updated. With ``train=True`` and ``layer_dropout > 0`` whole blocks are dropped, each
    with probability ``layer_dropout`` and at least one kept, by a mask drawn from the
    ``'dropout'`` rng (:func:`vit_layers_flax.layer_keep_mask`). In evaluation no block is
    dropped — unlike the reference, which drops blocks in eval mode too. ``remat``
    rematerialises each block in the backward pass. ``scan=True`` runs the blocks as one
    ``nn.scan`` over a single block ``layers`` whose parameters carry a leading ``depth``
    axis; each step receives its LayerScale initial value and its keep flag as scanned
    inputs, so the stack is the same as the loop's (``layers_0`` ...) and compiles once.
    """

    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    layer_dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None, *, train: bool = False) -> Array:
        keep = None
        if train and self.layer_dropout > 0:
            keep = layer_keep_mask(self.make_rng("dropout"), self.depth, self.layer_dropout)
        block_cls = LayerScaleBlock
        if self.remat:  # under scan, CSE cannot undo the rematerialisation (flax's advice)
            block_cls = nn.remat(LayerScaleBlock, static_argnums=(4,), prevent_cse=not self.scan)
        fields = dict(dropout=self.dropout, dtype=self.dtype, param_dtype=self.param_dtype)
        sizes = (self.dim, self.heads, self.dim_head, self.mlp_dim)
        if not self.scan:
            for i in range(self.depth):
                block = block_cls(*sizes, depth=i + 1, name=f"layers_{i}", **fields)
                x = block(x, context, None if keep is None else keep[i], train)
            return x
        init_eps = jnp.asarray([layer_scale_init_eps(i + 1) for i in range(self.depth)], jnp.float32)

        def step(block: nn.Module, x: Array, inputs: tuple[Array, Array | None]) -> tuple[Array, None]:
            eps, keep_i = inputs
            return block(x, context, keep_i, train, eps), None

        x, _ = nn.scan(
            step,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            length=self.depth,
        )(block_cls(*sizes, name="layers", **fields), x, (init_eps, keep))
        return x
