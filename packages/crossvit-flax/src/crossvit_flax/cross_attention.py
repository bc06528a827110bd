"""Cross-attention token fusion (Chen et al., 2021, section 3.3): each branch's class token
attends to itself and to the other branch's patch tokens, after vit-pytorch's
``cross_vit.Attention(kv_include_self=True)``, ``ProjectInOut`` and ``CrossTransformer``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Dense, LayerNorm, apply_attention, attention_weights
from vit_layers_flax.typing import Array, Dtype


class CrossAttention(nn.Module):
    """Pre-norm multi-head attention of ``x`` over ``[norm(x), context]``.

    ``x: (batch, q_len, dim)``, ``context: (batch, ctx_len, dim)`` ``-> (batch, q_len, dim)``.

    Only ``x`` is normalised: queries come from ``norm(x)``, keys and values from
    ``norm(x)`` and ``context`` concatenated along the tokens, with ``context`` *not*
    normalised (the reference's ``kv_include_self=True``: the class token is its own key
    and value besides the other branch's patch tokens). Plain softmax attention: in
    evaluation (or with ``dropout == 0``) it runs through :func:`jax.nn.dot_product_attention`
    (``implementation``: ``None``, ``'xla'`` or ``'cudnn'``); attention-weight dropout in
    training takes the explicit float32-softmax path. Parameters mirror the reference:
    ``norm``, ``to_q``, ``to_kv`` (no biases) and ``to_out``, which is always present.
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, context: Array, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = self.heads * self.dim_head
        x = LayerNorm(name="norm", **dense)(x)
        kv_input = jnp.concatenate([x, context.astype(x.dtype)], axis=1)

        q = Dense(inner, use_bias=False, name="to_q", **dense)(x)
        kv = Dense(2 * inner, use_bias=False, name="to_kv", **dense)(kv_input)
        q = rearrange(q, "b n (h d) -> b n h d", h=self.heads)
        k, v = rearrange(kv, "b n (two h d) -> two b n h d", two=2, h=self.heads)
        if train and self.dropout > 0:
            weights = nn.Dropout(self.dropout)(attention_weights(q, k), deterministic=False)
            out = apply_attention(weights, v)
        else:
            out = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)

        out = rearrange(out, "b n h d -> b n (h d)")
        out = Dense(self.dim, name="to_out", **dense)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)


class ProjectedCrossAttention(nn.Module):
    """A class token of width ``dim_in`` attending to context tokens of width ``dim``.

    ``cls: (batch, 1, dim_in)``, ``context: (batch, ctx_len, dim)`` ``-> (batch, 1, dim_in)``
    (the update, without the residual).

    ``project_in: Dense(dim_in -> dim) -> CrossAttention(dim) -> project_out: Dense(dim -> dim_in)``;
    both projections are absent (identity) when ``dim_in == dim``, as the reference's
    ``ProjectInOut``. Parameters: ``project_in``, ``attn`` (the reference's ``fn``),
    ``project_out``.
    """

    dim_in: int
    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, cls: Array, context: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        project = self.dim_in != self.dim
        if project:
            cls = Dense(self.dim, name="project_in", **dtypes)(cls)
        cls = CrossAttention(
            self.dim,
            self.heads,
            self.dim_head,
            dropout=self.dropout,
            implementation=self.implementation,
            name="attn",
            **dtypes,
        )(cls, context, train=train)
        if project:
            cls = Dense(self.dim_in, name="project_out", **dtypes)(cls)
        return cls


class CrossTransformer(nn.Module):
    """``depth`` rounds of class-token cross-attention between the two branches.

    ``sm_tokens: (batch, 1 + sm_patches, sm_dim)``, ``lg_tokens: (batch, 1 + lg_patches, lg_dim)``
    ``-> (sm_tokens, lg_tokens)`` of the same shapes.

    In each round the small branch's class token attends to ``[itself, large patch tokens]``,
    then the large branch's class token to ``[itself, small patch tokens]``, each with a
    residual; the patch tokens pass through unchanged. Parameters ``sm_attend_lg_{i}`` and
    ``lg_attend_sm_{i}`` (:class:`ProjectedCrossAttention`; the reference's ``layers.{i}.0``
    and ``layers.{i}.1``).
    """

    sm_dim: int
    lg_dim: int
    depth: int
    heads: int
    dim_head: int
    dropout: float = 0.0
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, sm_tokens: Array, lg_tokens: Array, *, train: bool = False) -> tuple[Array, Array]:
        attn = dict(
            heads=self.heads,
            dim_head=self.dim_head,
            dropout=self.dropout,
            implementation=self.implementation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        sm_cls, sm_patches = sm_tokens[:, :1], sm_tokens[:, 1:]
        lg_cls, lg_patches = lg_tokens[:, :1], lg_tokens[:, 1:]
        for i in range(self.depth):
            sm_attend_lg = ProjectedCrossAttention(self.sm_dim, self.lg_dim, name=f"sm_attend_lg_{i}", **attn)
            lg_attend_sm = ProjectedCrossAttention(self.lg_dim, self.sm_dim, name=f"lg_attend_sm_{i}", **attn)
            sm_cls = sm_cls + sm_attend_lg(sm_cls, lg_patches, train=train)
            lg_cls = lg_cls + lg_attend_sm(lg_cls, sm_patches, train=train)
        return jnp.concatenate([sm_cls, sm_patches], axis=1), jnp.concatenate([lg_cls, lg_patches], axis=1)
