"""LeViT attention: BatchNorm'd 1x1-conv projections, a learned per-head attention bias indexed
by the query-key offset, and an optional strided ("shrinking") query that halves the map."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from levit_flax.conv_norm import ConvNorm
from vit_layers_flax import Layer, apply_attention, gelu
from vit_layers_flax.typing import Array

#: the activations before the attention's output projection: vit-pytorch's GELU (torch's erf
#: form), timm's Hardswish
ACTIVATIONS = {"gelu": gelu, "hard_swish": nn.hard_swish}


def attention_bias_indices(fmap_size: int, downsample: bool = False) -> np.ndarray:
    """Row of the bias table each (query, key) pair reads, as the reference's ``pos_indices``.

    ``-> (queries, keys)`` int32, with ``keys = fmap_size ** 2`` positions ``(i, j)`` of the
    map in row-major order and queries the same, or with ``downsample`` those at even
    ``i`` and ``j`` (``ceil(fmap_size / 2) ** 2``). The pair reads row
    ``|i_q - i_k| * fmap_size + |j_q - j_k|``: the bias depends only on the absolute offset.
    A static numpy constant, computed at trace time.
    """
    q_range = np.arange(0, fmap_size, 2 if downsample else 1)
    k_range = np.arange(fmap_size)
    q_pos = np.stack(np.meshgrid(q_range, q_range, indexing="ij"), axis=-1).reshape(-1, 2)
    k_pos = np.stack(np.meshgrid(k_range, k_range, indexing="ij"), axis=-1).reshape(-1, 2)
    rel = np.abs(q_pos[:, None, :] - k_pos[None, :, :])
    return (rel[..., 0] * fmap_size + rel[..., 1]).astype(np.int32)


class ConvNormAttention(Layer):
    """LeViT's attention on an ``f x f`` map: :class:`ConvNorm` projections and a learned attention bias.

    ``(batch, f, f, dim) -> (batch, f', f', dim_out)``, ``f' = ceil(f / 2)`` with
    ``downsample`` (strided queries: the shrinking attention) else ``f``. ``to_q``, ``to_k``
    (``heads`` of ``dim_key``) and ``to_v`` (``heads`` of ``dim_value``) are 1x1 convolutions
    with BatchNorm. The logits ``q·k * dim_key ** -0.5`` get the bias *divided* by that scale
    (as the reference), gathered from the ``(f * f, heads)`` table ``pos_bias`` with
    :func:`attention_bias_indices`; softmax in float32. The output is GELU, then ``to_out``
    (a 1x1 convolution with bias and a BatchNorm whose scale starts at zero), then dropout.

    timm's attention (the same function with its options): ``bias_over_scale=False`` adds
    the bias as it is, ``activation="hard_swish"`` before ``to_out``, ``out_bias=False`` (its
    ``LinearNorm``); ``zero_init_out=False`` starts ``to_out``'s norm at one (timm's
    downsampling attention). timm's fused ``qkv`` (and ``kv``) projection is per head
    ``[q, k, v]``; a BatchNorm is per channel, so it splits exactly into ``to_q``, ``to_k``
    and ``to_v`` (the converter does it).
    """

    dim_out: int
    fmap_size: int
    heads: int = 8
    dim_key: int = 32
    dim_value: int = 64
    dropout: float = 0.0
    downsample: bool = False
    bias_over_scale: bool = True
    activation: str = "gelu"
    out_bias: bool = True
    zero_init_out: bool = True

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        f = self.fmap_size
        if tuple(x.shape[1:3]) != (f, f):
            raise ValueError(
                f"LeViT ConvNormAttention: expected feature maps of shape (batch, {f}, {f}, channels), "
                f"received shape {tuple(x.shape)}"
            )
        heads, scale = self.heads, self.dim_key**-0.5
        q = ConvNorm(heads * self.dim_key, strides=2 if self.downsample else 1, name="to_q", **dtypes)(
            x, train=train
        )
        k = ConvNorm(heads * self.dim_key, name="to_k", **dtypes)(x, train=train)
        v = ConvNorm(heads * self.dim_value, name="to_v", **dtypes)(x, train=train)
        q_rows = q.shape[1]
        q, k, v = (rearrange(t, "b x y (h d) -> b (x y) h d", h=heads) for t in (q, k, v))

        table = nn.Embed(
            f * f,
            heads,
            embedding_init=nn.initializers.normal(stddev=1.0),  # torch's nn.Embedding: N(0, 1)
            name="pos_bias",
            **dtypes,
        )
        bias = table(attention_bias_indices(f, self.downsample))  # (queries, keys, heads)
        bias = rearrange(bias, "i j h -> h i j").astype(jnp.float32)

        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
        weights = jax.nn.softmax(logits + (bias / scale if self.bias_over_scale else bias), axis=-1)
        weights = nn.Dropout(self.dropout)(weights, deterministic=not train)
        out = rearrange(apply_attention(weights, v), "b (x y) h d -> b x y (h d)", x=q_rows)

        out = ACTIVATIONS[self.activation](out)
        to_out = ConvNorm(
            self.dim_out, use_bias=self.out_bias, zero_init_norm=self.zero_init_out, name="to_out", **dtypes
        )
        out = to_out(out, train=train)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
