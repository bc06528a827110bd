"""Cross-attention token fusion (Chen et al., 2021, section 3.3): each branch's class token
attends to itself and to the other branch's patch tokens, after vit-pytorch's
``cross_vit.Attention(kv_include_self=True)``, ``ProjectInOut`` and ``CrossTransformer``."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Dense, DotProductAttention, Layer, LayerNorm, apply_blocks
from vit_layers_flax.typing import Array


class CrossAttention(Layer):
    """A class token's pre-norm multi-head attention over ``[norm(x), context]``.

    ``x: (batch, 1, dim_in)``, ``context: (batch, ctx_len, dim)`` ``-> (batch, 1, dim_in)``
    (the update, without the residual). Queries come from ``norm(x)``, keys and values from
    ``norm(x)`` and the un-normalised ``context`` (the reference's ``kv_include_self=True``).
    When ``dim_in`` (default ``dim``) differs from ``dim``, ``x`` is projected in
    (``project_in``) and the result back out (``project_out``), as the reference's
    ``ProjectInOut``. Parameters ``norm``, ``to_q``, ``to_kv`` (no biases) and ``to_out``.
    """

    dim: int
    dim_in: int | None = None
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    implementation: str | None = None

    @nn.compact
    def __call__(self, x: Array, context: Array, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        project = self.dim_in is not None and self.dim_in != self.dim
        if project:
            x = Dense(self.dim, name="project_in", **dense)(x)
        inner = self.heads * self.dim_head
        x = LayerNorm(name="norm", **dense)(x)
        kv_input = jnp.concatenate([x, context.astype(x.dtype)], axis=1)

        q = Dense(inner, use_bias=False, name="to_q", **dense)(x)
        kv = Dense(2 * inner, use_bias=False, name="to_kv", **dense)(kv_input)
        q = rearrange(q, "b n (h d) -> b n h d", h=self.heads)
        k, v = rearrange(kv, "b n (two h d) -> two b n h d", two=2, h=self.heads)
        out = DotProductAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)

        out = rearrange(out, "b n h d -> b n (h d)")
        out = Dense(self.dim, name="to_out", **dense)(out)
        out = nn.Dropout(self.dropout)(out, deterministic=not train)
        if project:
            out = Dense(self.dim_in, name="project_out", **dense)(out)
        return out


class CrossAttentionLayer(nn.Module):
    """One round of class-token fusion (a layer of the reference's ``CrossTransformer``).

    ``(sm_cls, lg_cls)``, each ``(batch, 1, width)``, with the patch tokens ``sm_patches``
    and ``lg_patches`` ``-> (sm_cls, lg_cls)``: the small branch's class token attends to
    the large branch's patches (``sm_attend_lg``, width ``lg_dim``), then the large branch's
    to the small branch's (``lg_attend_sm``), each with a residual. ``attention`` builds
    them as ``attention(dim, dim_in=, name=)`` (a :class:`CrossAttention` partial).
    """

    sm_dim: int
    lg_dim: int
    attention: Callable[..., nn.Module] = CrossAttention

    @nn.compact
    def __call__(
        self, cls_tokens: tuple[Array, Array], sm_patches: Array, lg_patches: Array, *, train: bool = False
    ) -> tuple[Array, Array]:
        sm_cls, lg_cls = cls_tokens
        sm_attend_lg = self.attention(self.lg_dim, dim_in=self.sm_dim, name="sm_attend_lg")
        lg_attend_sm = self.attention(self.sm_dim, dim_in=self.lg_dim, name="lg_attend_sm")
        sm_cls = sm_cls + sm_attend_lg(sm_cls, lg_patches, train=train)
        lg_cls = lg_cls + lg_attend_sm(lg_cls, sm_patches, train=train)
        return sm_cls, lg_cls


class CrossTransformer(nn.Module):
    """``depth`` :class:`CrossAttentionLayer` s (``layer(name=)`` builds one) on the two
    branches' class tokens; the patch tokens pass through unchanged.

    ``sm_tokens: (batch, 1 + sm_patches, sm_dim)``, ``lg_tokens: (batch, 1 + lg_patches, lg_dim)``
    ``-> (sm_tokens, lg_tokens)`` of the same shapes.
    """

    depth: int
    layer: Callable[..., nn.Module]
    remat: bool = False
    scan: bool = False

    @nn.compact
    def __call__(self, sm_tokens: Array, lg_tokens: Array, *, train: bool = False) -> tuple[Array, Array]:
        sm_patches, lg_patches = sm_tokens[:, 1:], lg_tokens[:, 1:]
        sm_cls, lg_cls = apply_blocks(
            lambda name: self.layer(name=name),
            self.depth,
            (sm_tokens[:, :1], lg_tokens[:, :1]),
            sm_patches,
            lg_patches,
            train=train,
            scan=self.scan,
            remat=self.remat,
        )
        return jnp.concatenate([sm_cls, sm_patches], axis=1), jnp.concatenate([lg_cls, lg_patches], axis=1)
