"""Cross-attention token fusion (Chen et al., 2021, section 3.3): each branch's class token
attends to itself and to the other branch's patch tokens, after vit-pytorch's
``cross_vit.Attention(kv_include_self=True)``, ``ProjectInOut`` and ``CrossTransformer``, or
(``layout="timm"``) after timm's ``crossvit`` (the original CrossViT's ``projs``,
``CrossAttentionBlock`` and ``revert_projs``)."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Dense, DotProductAttention, Layer, LayerNorm, apply_blocks, gelu
from vit_layers_flax.typing import Array

#: the two block layouts :class:`CrossAttention` implements
LAYOUTS = ("vit-pytorch", "timm")


class Projection(Layer):
    """``LayerNorm -> GELU -> Dense(dim)``: the original CrossViT's (timm's) projection of a
    class token to the other branch's width and back. Parameters ``norm`` and ``fc``."""

    dim: int
    norm_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dense)(x)
        return Dense(self.dim, name="fc", **dense)(gelu(x))


class CrossAttention(Layer):
    """A class token's pre-norm multi-head attention over ``[norm(x), context]``.

    ``x: (batch, 1, dim_in)``, ``context: (batch, ctx_len, dim)`` ``-> (batch, 1, dim_in)``.
    Queries come from ``norm(x)``, keys and values from ``norm(x)`` and the ``context``.

    ``layout="vit-pytorch"`` (default): the reference's ``ProjectInOut(Attention)``. The
    result is the update, without the residual; the context is not normalised; when
    ``dim_in`` (default ``dim``) differs from ``dim``, ``x`` is projected in (``project_in``,
    a Dense) and the result back out (``project_out``). Parameters ``norm``, ``to_q``,
    ``to_kv`` (no biases unless ``qkv_bias``) and ``to_out``.

    ``layout="timm"``: timm's (the original CrossViT's) ``projs`` / ``CrossAttentionBlock`` /
    ``revert_projs``. ``x`` is always projected in by a :class:`Projection` (``LayerNorm ->
    GELU -> Dense``, ``project_in``), the context is normalised by the same ``norm``, the
    residual is taken in the attended width (``x + attention``) and the sum is projected
    back by another :class:`Projection` (``project_out``): the result is the new class
    token, which replaces the old one (:class:`CrossAttentionLayer` with
    ``residual=False``).

    ``dim_head=None`` makes each head ``dim // heads`` wide (timm's). ``norm_epsilon`` is
    every LayerNorm's.
    """

    dim: int
    dim_in: int | None = None
    heads: int = 8
    dim_head: int | None = 64
    dropout: float = 0.0
    implementation: str | None = None
    layout: str = "vit-pytorch"
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"CrossAttention: layout must be one of {LAYOUTS}, received {self.layout!r}")
        if self.dim_head is None and self.dim % self.heads:
            raise ValueError(
                f"CrossAttention: dim_head=None needs dim divisible by heads, received dim={self.dim}, "
                f"heads={self.heads}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, context: Array, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        timm = self.layout == "timm"
        dim_in = self.dim if self.dim_in is None else self.dim_in
        project = timm or dim_in != self.dim
        if timm:
            x = Projection(self.dim, self.norm_epsilon, name="project_in", **dense)(x)
        elif project:
            x = Dense(self.dim, name="project_in", **dense)(x)
        dim_head = self.dim // self.heads if self.dim_head is None else self.dim_head
        inner = self.heads * dim_head
        shortcut = x
        norm = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dense)
        x = norm(x)
        context = context.astype(x.dtype)
        kv_input = jnp.concatenate([x, norm(context) if timm else context], axis=1)

        q = Dense(inner, use_bias=self.qkv_bias, name="to_q", **dense)(x)
        kv = Dense(2 * inner, use_bias=self.qkv_bias, name="to_kv", **dense)(kv_input)
        q = rearrange(q, "b n (h d) -> b n h d", h=self.heads)
        k, v = rearrange(kv, "b n (two h d) -> two b n h d", two=2, h=self.heads)
        out = DotProductAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)

        out = rearrange(out, "b n h d -> b n (h d)")
        out = Dense(self.dim, name="to_out", **dense)(out)
        out = nn.Dropout(self.dropout)(out, deterministic=not train)
        if timm:
            return Projection(dim_in, self.norm_epsilon, name="project_out", **dense)(shortcut + out)
        if project:
            out = Dense(dim_in, name="project_out", **dense)(out)
        return out


class CrossAttentionLayer(nn.Module):
    """One round of class-token fusion (a layer of the reference's ``CrossTransformer``).

    ``(sm_cls, lg_cls)``, each ``(batch, 1, width)``, with the patch tokens ``sm_patches``
    and ``lg_patches`` ``-> (sm_cls, lg_cls)``: the small branch's class token attends to
    the large branch's patches (``sm_attend_lg``, width ``lg_dim``), then the large branch's
    to the small branch's (``lg_attend_sm``), each added to the token (``residual``, vit-pytorch's)
    or replacing it (``residual=False``: timm's layout, whose attention returns the new token).
    ``attention`` builds them as ``attention(dim, dim_in=, name=)`` (a :class:`CrossAttention`
    partial).
    """

    sm_dim: int
    lg_dim: int
    attention: Callable[..., nn.Module] = CrossAttention
    residual: bool = True

    @nn.compact
    def __call__(
        self, cls_tokens: tuple[Array, Array], sm_patches: Array, lg_patches: Array, *, train: bool = False
    ) -> tuple[Array, Array]:
        sm_cls, lg_cls = cls_tokens
        sm_attend_lg = self.attention(self.lg_dim, dim_in=self.sm_dim, name="sm_attend_lg")
        lg_attend_sm = self.attention(self.sm_dim, dim_in=self.lg_dim, name="lg_attend_sm")
        sm_new = sm_attend_lg(sm_cls, lg_patches, train=train)
        lg_new = lg_attend_sm(lg_cls, sm_patches, train=train)
        if self.residual:
            return sm_cls + sm_new, lg_cls + lg_new
        return sm_new, lg_new


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
