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
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = self.heads * self.dim_head
        x = LayerNorm(name="norm", **dense)(x)
        kv_input = x if context is None else jnp.concatenate([x, context.astype(x.dtype)], axis=1)

        q = Dense(inner, use_bias=False, name="to_q", **dense)(x)
        kv = Dense(2 * inner, use_bias=False, name="to_kv", **dense)(kv_input)
        q = rearrange(q, "b n (h d) -> b n h d", h=self.heads)
        k, v = rearrange(kv, "b n (two h d) -> two b n h d", two=2, h=self.heads)

        acc = jnp.promote_types(q.dtype, jnp.float32)  # float32, or float64 under x64
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        shape = (self.heads, self.heads)
        mix_pre = self.param("mix_heads_pre_attn", init, shape, self.param_dtype).astype(acc)
        mix_post = self.param("mix_heads_post_attn", init, shape, self.param_dtype).astype(acc)

        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=acc)
        logits = logits * self.dim_head**-0.5
        logits = jnp.einsum("bhqk,hg->bgqk", logits, mix_pre)  # talking heads, pre-softmax
        weights = jax.nn.softmax(logits, axis=-1)
        weights = nn.Dropout(self.dropout)(weights, deterministic=not train)
        weights = jnp.einsum("bhqk,hg->bgqk", weights, mix_post)  # talking heads, post-softmax

        out = rearrange(apply_attention(weights, v), "b n h d -> b n (h d)")
        out = Dense(self.dim, name="to_out", **dense)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
