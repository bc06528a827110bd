"""Multi-head self-attention, pre-norm, as vit-pytorch's ``Attention``."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax.dense import Dense
from vit_layers_flax.layer_norm import LayerNorm
from vit_layers_flax.module import Layer
from vit_layers_flax.typing import Array


def attention_weights(q: Array, k: Array, scale: float | None = None, bias: Array | None = None) -> Array:
    """Softmax attention weights, computed in float32 (or wider, under x64).

    ``q: (batch, q_len, heads, dim_head)``, ``k: (batch, kv_len, heads, dim_head)``
    ``-> (batch, heads, q_len, kv_len)``. ``bias`` (broadcastable to that shape, e.g. a
    ``(heads, q_len, kv_len)`` relative position bias) is added to the scaled logits.
    Used where the weights themselves are needed (attention dropout, re-attention,
    talking heads).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    accumulate = jnp.promote_types(q.dtype, jnp.float32)
    # heads before tokens: a plain batched matrix product (on the CPU, products batched over
    # (b, h) with the token axis between run several times slower)
    q, k = jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2)
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=accumulate) * scale
    if bias is not None:
        logits = logits + bias.astype(accumulate)
    return jax.nn.softmax(logits, axis=-1)


def apply_attention(weights: Array, v: Array) -> Array:
    """``weights: (batch, heads, q_len, kv_len)``, ``v: (batch, kv_len, heads, dim_head)``
    ``-> (batch, q_len, heads, dim_head)`` in ``v``'s dtype."""
    out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), jnp.swapaxes(v, 1, 2))
    return jnp.swapaxes(out, 1, 2)


def split_qkv(qkv: Array, heads: int) -> tuple[Array, Array, Array]:
    """A fused ``to_qkv`` projection's output, ``(..., 3 * heads * dim_head)`` with q, k and v
    one after the other (the reference's ``chunk(3)``), as ``q, k, v``, each
    ``(..., heads, dim_head)``. A split, whose gradient XLA writes as one concatenation
    (indexing a rearranged stack pads each gradient to the full width and adds them)."""
    q, k, v = (rearrange(t, "... (h d) -> ... h d", h=heads) for t in jnp.split(qkv, 3, axis=-1))
    return q, k, v


class DotProductAttention(nn.Module):
    """Scaled dot-product softmax attention with dropout on the weights; no parameters.

    ``q: (batch, q_len, heads, dim_key)``, ``k: (batch, kv_len, heads, dim_key)``,
    ``v: (batch, kv_len, heads, dim_value)``, optional ``bias`` broadcastable to
    ``(batch, heads, q_len, kv_len)`` ``-> (batch, q_len, heads, dim_value)``; scale
    ``dim_key ** -0.5``. In evaluation it is :func:`jax.nn.dot_product_attention` with
    ``implementation``, except in programs compiled for the CPU with ``implementation``
    ``None`` or ``'xla'``, which take the explicit path, faster there; dropout on the weights
    in training, or ``dim_key != dim_value``, takes the explicit path (:func:`attention_weights`,
    float32 softmax) everywhere.
    """

    dropout: float = 0.0
    implementation: str | None = None

    @nn.compact
    def __call__(
        self, q: Array, k: Array, v: Array, bias: Array | None = None, *, train: bool = False
    ) -> Array:
        if (train and self.dropout > 0) or k.shape[-1] != v.shape[-1]:
            weights = nn.Dropout(self.dropout)(attention_weights(q, k, bias=bias), deterministic=not train)
            return apply_attention(weights, v)
        if bias is not None:  # 4-D, broadcast by the kernel over batch (and heads, if shared)
            bias = jnp.reshape(bias, (1,) * (4 - bias.ndim) + bias.shape).astype(q.dtype)
        fused = functools.partial(jax.nn.dot_product_attention, bias=bias, implementation=self.implementation)
        if self.implementation == "cudnn":
            return fused(q, k, v)

        def explicit(q, k, v):  # XLA's attention, heads first (attention_weights)
            return apply_attention(attention_weights(q, k, bias=bias), v)

        return jax.lax.platform_dependent(q, k, v, cpu=explicit, default=fused)


class Attention(Layer):
    """Pre-norm multi-head self-attention.

    ``(batch, tokens, dim) -> (batch, tokens, dim)``.

    Parameters mirror the reference: ``norm``, ``to_qkv`` (no bias, unless ``qkv_bias``: the
    original ViT's) and ``to_out``. ``to_out`` is absent when ``heads == 1 and dim_head == dim``
    unless ``project_out`` says otherwise. ``norm_epsilon`` is the LayerNorm's (1e-6 in the
    original ViT). The attention itself is :class:`DotProductAttention`
    (:func:`jax.nn.dot_product_attention` with ``implementation``, or the explicit weights
    when training with attention dropout).
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    project_out: bool | None = None
    out_bias: bool = True
    implementation: str | None = None
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5

    @property
    def projects_out(self) -> bool:
        if self.project_out is not None:
            return self.project_out
        return not (self.heads == 1 and self.dim_head == self.dim)

    @nn.compact
    def __call__(self, x: Array, bias: Array | None = None, *, train: bool = False) -> Array:
        """``bias`` (optional, broadcastable to ``(batch, heads, tokens, tokens)``) is added
        to the scaled logits, e.g. a relative position bias."""
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dense)(x)
        qkv = Dense(3 * self.heads * self.dim_head, use_bias=self.qkv_bias, name="to_qkv", **dense)(x)
        q, k, v = split_qkv(qkv, self.heads)
        out = DotProductAttention(self.dropout, self.implementation, name="attend")(
            q, k, v, bias, train=train
        )
        out = rearrange(out, "b n h d -> b n (h d)")
        if not self.projects_out:
            return out
        out = Dense(self.dim, use_bias=self.out_bias, name="to_out", **dense)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
