"""CaiT's block stack: LayerScale'd pre-norm blocks with talking-heads attention and layer dropout."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import numpy as np

from cait_flax.layer_dropout import layer_keep_mask
from cait_flax.layer_scale import LayerScale, initial_layer_scale
from cait_flax.talking_heads import TalkingHeadsAttention
from vit_layers_flax import FeedForward, Layer, Model, apply_blocks
from vit_layers_flax.typing import Array


class LayerScaleBlock(Layer):
    """``x + LayerScale(attn(x, context))``, then ``x + LayerScale(ff(x))``: ``(batch, tokens, dim)``.

    ``context`` (``(batch, ctx_tokens, dim)`` or ``None``) is the class-attention context;
    ``initial_scale`` initialises both LayerScales (``attn_scale``, ``ff_scale``);
    ``layer_kept`` is the block's flag from :func:`~cait_flax.layer_keep_mask` (``None``:
    always kept): a dropped block still computes, its branches multiplied by 0. Parameters
    ``attn``, ``attn_scale``, ``ff``, ``ff_scale`` are the reference's ``layers.{i}.0.fn``,
    ``.0.scale``, ``.1.fn``, ``.1.scale``. ``attention`` and ``feed_forward`` build the two
    branches (called as ``attention(dim, heads, dim_head, dropout=, name=)`` and
    ``feed_forward(dim, mlp_dim, dropout=, name=)``; ``functools.partial`` sets their options).
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    attention: Callable[..., nn.Module] = TalkingHeadsAttention
    feed_forward: Callable[..., nn.Module] = FeedForward

    @nn.compact
    def __call__(
        self,
        x: Array,
        context: Array | None,
        initial_scale: Array | float,
        layer_kept: Array | None = None,
        *,
        train: bool = False,
    ) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def residual(x: Array, branch: Array) -> Array:
            if layer_kept is not None:
                branch = layer_kept.astype(branch.dtype) * branch
            return x + branch.astype(x.dtype)

        attn = self.attention(
            self.dim, self.heads, self.dim_head, dropout=self.dropout, name="attn", **dtypes
        )
        attn_scale = LayerScale(name="attn_scale", **dtypes)
        x = residual(x, attn_scale(attn(x, context, train=train), initial_scale))
        ff = self.feed_forward(self.dim, self.mlp_dim, dropout=self.dropout, name="ff", **dtypes)
        ff_scale = LayerScale(name="ff_scale", **dtypes)
        return residual(x, ff_scale(ff(x, train=train), initial_scale))


class LayerScaleTransformer(Model):
    """``depth`` :class:`LayerScaleBlock` s through :func:`~vit_layers_flax.apply_blocks`, no final norm.

    ``x: (batch, tokens, dim)``, ``context: (batch, ctx_tokens, dim) | None -> (batch, tokens, dim)``.
    With ``context`` every block reads keys and values from ``[norm(x), context]`` (CaiT's
    class attention); ``context`` itself is not updated. Block ``i`` gets its LayerScale
    initial value (:func:`~cait_flax.initial_layer_scale` of ``i + 1``) and, in training
    with ``layer_dropout > 0``, its :func:`~cait_flax.layer_keep_mask` flag as per-layer
    inputs. Unlike the reference, no block is dropped in evaluation. ``return_features=True``
    returns ``(x, outputs)``, ``outputs`` every block's output. ``layer_scale_init``: one
    initial LayerScale for every block instead (timm's and the paper's code's
    ``init_values``); ``attention`` and ``feed_forward``: the blocks' branches
    (:class:`LayerScaleBlock`).
    """

    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    layer_dropout: float = 0.0
    layer_scale_init: float | None = None
    attention: Callable[..., nn.Module] = TalkingHeadsAttention
    feed_forward: Callable[..., nn.Module] = FeedForward

    @nn.compact
    def __call__(
        self, x: Array, context: Array | None = None, *, train: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, tuple[Array, ...]]:
        if self.layer_scale_init is None:
            initial_scales = np.asarray([initial_layer_scale(i + 1) for i in range(self.depth)], np.float32)
        else:
            initial_scales = np.full(self.depth, self.layer_scale_init, np.float32)
        layer_kept = None
        if train and self.layer_dropout > 0:
            layer_kept = layer_keep_mask(self.make_rng("dropout"), self.depth, self.layer_dropout)
        block = functools.partial(
            LayerScaleBlock,
            self.dim,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            attention=self.attention,
            feed_forward=self.feed_forward,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        return apply_blocks(
            lambda name: block(name=name),
            self.depth,
            x,
            context,
            train=train,
            scan=self.scan,
            remat=self.remat,
            per_layer=(initial_scales, layer_kept),
            collect=return_features,
        )
