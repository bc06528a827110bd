"""Scalable Self-Attention (SSA): queries at full resolution, keys and values from a strided conv."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import ChanLayerNorm, Dense, SoftmaxAttention
from vit_layers_flax.typing import Array, Dtype


class ScalableSelfAttention(nn.Module):
    """vit-pytorch's ``scalable_vit.ScalableSelfAttention``: ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    The map is normalised over channels (``norm``, a channel LayerNorm with ``g``/``b``).
    Queries are a pointwise projection to ``heads * dim_key`` channels (``to_q``, a ``Dense``
    on the channel axis, no bias); keys (``heads * dim_key``) and values (``heads *
    dim_value``) come from ``reduction_factor x reduction_factor`` convolutions of stride
    ``reduction_factor`` without padding or bias (``to_k``, ``to_v``), so the ``H * W``
    queries attend to ``(H / r) * (W / r)`` keys (``H`` and ``W`` multiples of ``r``: the
    model checks this per stage). Heads are split from the channels as ``(heads d)``, the
    scale is ``dim_key ** -0.5``; the result is projected back to ``dim`` (``to_out``,
    pointwise, with bias). ``dropout`` acts on the attention weights and after ``to_out``,
    only when ``train=True``.
    """

    dim: int
    heads: int = 8
    dim_key: int = 32
    dim_value: int = 32
    dropout: float = 0.0
    reduction_factor: int = 1
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        height = x.shape[1]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        r = self.reduction_factor
        reduce = dict(kernel_size=(r, r), strides=(r, r), padding="VALID", use_bias=False, **dtypes)

        x = ChanLayerNorm(name="norm", **dtypes)(x)
        q = Dense(self.heads * self.dim_key, use_bias=False, name="to_q", **dtypes)(x)
        k = nn.Conv(self.heads * self.dim_key, name="to_k", **reduce)(x)
        v = nn.Conv(self.heads * self.dim_value, name="to_v", **reduce)(x)
        q, k, v = (rearrange(t, "b x y (h d) -> b (x y) h d", h=self.heads) for t in (q, k, v))

        out = SoftmaxAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)
        out = rearrange(out, "b (x y) h d -> b x y (h d)", x=height)
        out = Dense(self.dim, name="to_out", **dtypes)(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
