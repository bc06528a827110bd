"""Re-attention (Zhou et al., 2021): attention maps mixed across heads by a learned matrix."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Dense, Layer, LayerNorm, attention_weights, split_qkv
from vit_layers_flax.typing import Array


class ReAttention(Layer):
    """Pre-norm multi-head self-attention with re-attention, as vit-pytorch's ``deepvit.Attention``.

    Zhou et al., 2021 (arXiv:2103.11886). ``(batch, tokens, dim) -> (batch, tokens, dim)``.
    The softmaxed attention ``(batch, heads, i, j)`` (float32, attention dropout in training)
    is mixed across heads by the learned ``(heads, heads)`` matrix ``reattn_weights``, then
    normalised by a LayerNorm over the heads axis (``reattn_norm``), before it weighs the
    values. Parameters as the reference's: ``norm``, ``to_qkv`` (no bias), ``reattn_weights``,
    ``reattn_norm`` and ``to_out``, which DeepViT keeps even for a single head.
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = LayerNorm(name="norm", **dense)(x)
        qkv = Dense(3 * self.heads * self.dim_head, use_bias=False, name="to_qkv", **dense)(x)
        q, k, v = split_qkv(qkv, self.heads)

        attn = attention_weights(q, k)  # (b, h, i, j), float32
        attn = nn.Dropout(self.dropout)(attn, deterministic=not train)

        # re-attention: mix the maps across heads, then LayerNorm over the heads axis
        reattn_weights = self.param(
            "reattn_weights", nn.initializers.normal(stddev=1.0), (self.heads, self.heads), self.param_dtype
        )
        attn = jnp.einsum("bhij,hg->bijg", attn, reattn_weights.astype(jnp.float32))
        attn = LayerNorm(name="reattn_norm", **dense)(attn)  # statistics in float32

        out = jnp.einsum("bijh,bjhd->bihd", attn.astype(v.dtype), v)
        out = rearrange(out, "b n h d -> b n (h d)")
        out = Dense(self.dim, name="to_out", **dense)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
