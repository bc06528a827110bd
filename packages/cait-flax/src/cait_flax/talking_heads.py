"""Talking-heads attention (Shazeer et al., 2020) with optional class-attention context, as CaiT's ``Attention``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Dense, Layer, LayerNorm, apply_attention
from vit_layers_flax.typing import Array


class TalkingHeadsAttention(Layer):
    """Pre-norm multi-head attention whose heads are mixed by learned ``(heads, heads)``
    matrices before the softmax (``mix_heads_pre_attn``) and after it (``mix_heads_post_attn``).

    ``x: (batch, q_len, dim)``, ``context: (batch, ctx_len, dim) | None -> (batch, q_len, dim)``.
    Queries come from ``norm(x)``; keys and values from ``norm(x)`` alone, or from
    ``[norm(x), context]`` with ``context`` not normalised (CaiT's class attention). The
    logits, head mixing, softmax and attention dropout run in float32. Parameters mirror
    the reference: ``norm``, ``to_q``, ``to_kv`` (no biases), the two mixing matrices
    (``torch.randn`` init) and ``to_out``, which CaiT keeps even with one head of width ``dim``.

    The defaults are vit-pytorch's. The paper's (and timm's) CaiT needs the options:
    ``qkv_bias`` (biases on ``to_q`` and ``to_kv``), ``mix_bias`` (a bias ``(heads,)`` after
    each mixing matrix, ``mix_heads_pre_attn_bias``/``mix_heads_post_attn_bias``: timm's
    ``proj_l``/``proj_w`` are ``nn.Linear`` layers), ``norm_epsilon`` (the LayerNorm's),
    ``talking_heads=False`` (plain multi-head attention, no mixing: the paper's class
    attention) and ``norm_context`` (``context`` normalised by ``norm`` too: the paper's class
    attention reads ``norm([class token, patches])``).
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    qkv_bias: bool = False
    talking_heads: bool = True
    mix_bias: bool = False
    norm_context: bool = False
    norm_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = self.heads * self.dim_head
        norm = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dense)
        x = norm(x)
        if context is None:
            kv_input = x
        else:
            context = norm(context) if self.norm_context else context.astype(x.dtype)
            kv_input = jnp.concatenate([x, context], axis=1)

        q = Dense(inner, use_bias=self.qkv_bias, name="to_q", **dense)(x)
        kv = Dense(2 * inner, use_bias=self.qkv_bias, name="to_kv", **dense)(kv_input)
        q = rearrange(q, "b n (h d) -> b n h d", h=self.heads)
        k, v = rearrange(kv, "b n (two h d) -> two b n h d", two=2, h=self.heads)

        acc = jnp.promote_types(q.dtype, jnp.float32)  # float32, or float64 under x64
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=acc)
        logits = logits * self.dim_head**-0.5
        if self.talking_heads:
            logits = self._mix("mix_heads_pre_attn", logits, acc)  # talking heads, pre-softmax
        weights = jax.nn.softmax(logits, axis=-1)
        weights = nn.Dropout(self.dropout)(weights, deterministic=not train)
        if self.talking_heads:
            weights = self._mix("mix_heads_post_attn", weights, acc)  # talking heads, post-softmax

        out = rearrange(apply_attention(weights, v), "b n h d -> b n (h d)")
        out = Dense(self.dim, name="to_out", **dense)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)

    def _mix(self, name: str, scores: Array, acc: jnp.dtype) -> Array:
        """``scores: (batch, heads, q, k)`` mixed over the heads by the matrix ``name``
        (``torch.randn`` init), plus its bias with ``mix_bias``."""
        shape = (self.heads, self.heads)
        mix = self.param(name, nn.initializers.normal(stddev=1.0), shape, self.param_dtype).astype(acc)
        scores = jnp.einsum("bhqk,hg->bgqk", scores, mix)
        if self.mix_bias:
            bias = self.param(f"{name}_bias", nn.initializers.zeros, (self.heads,), self.param_dtype)
            scores = scores + bias.astype(acc)[:, None, None]
        return scores
