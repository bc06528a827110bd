"""Locality Self-Attention (LSA), after vit-pytorch's ``vit_for_small_dataset.LSA``."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import Dense, Layer, LayerNorm, apply_attention, split_qkv
from vit_layers_flax.typing import Array


def locality_attention_weights(q: Array, k: Array, scale: Array) -> Array:
    """Softmax attention weights with the diagonal masked out, computed in float32.

    ``q, k: (batch, tokens, heads, dim_head)``, ``scale: ()`` ``-> (batch, heads, tokens, tokens)``.
    Each token (the class token included) attends to every token but itself: the
    diagonal logits are set to ``-finfo(float32).max`` (the reference's mask value, finite,
    so a one-token sequence still gets weight 1 on itself as in torch).
    """
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    n = logits.shape[-1]
    eye = jnp.eye(n, dtype=bool)
    logits = jnp.where(eye, -jnp.finfo(jnp.float32).max, logits)
    return jax.nn.softmax(logits, axis=-1)


class LSA(Layer):
    """Pre-norm multi-head locality self-attention: ``(batch, tokens, dim) -> (batch, tokens, dim)``.

    Lee, Lee and Song, 2021 (arXiv:2112.13492). As multi-head attention, but the logits are
    scaled by ``exp(temperature)``, a learned scalar initialised to ``log(dim_head ** -0.5)``,
    and each token's own logit is masked before the (float32) softmax. Parameters as the
    reference's: ``norm``, ``to_qkv`` (no bias), ``temperature`` and ``to_out``, present even
    when ``heads == 1 and dim_head == dim``. ``dropout`` acts on the attention weights and
    after ``to_out``. The attention of :class:`ViT`'s shared ``TransformerBlock`` blocks.
    """

    dim: int
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        init_temperature = math.log(self.dim_head**-0.5)
        temperature = self.param(
            "temperature",
            lambda _, shape, dtype: jnp.full(shape, init_temperature, dtype),
            (),
            self.param_dtype,
        )
        x = LayerNorm(name="norm", **dense)(x)
        qkv = Dense(3 * self.heads * self.dim_head, use_bias=False, name="to_qkv", **dense)(x)
        q, k, v = split_qkv(qkv, self.heads)
        weights = locality_attention_weights(q, k, jnp.exp(temperature.astype(jnp.float32)))
        weights = nn.Dropout(self.dropout)(weights, deterministic=not train)
        out = rearrange(apply_attention(weights, v), "b n h d -> b n (h d)")
        out = Dense(self.dim, name="to_out", **dense)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
