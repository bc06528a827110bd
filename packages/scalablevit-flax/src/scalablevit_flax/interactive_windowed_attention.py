"""Interactive Window-based Self-Attention (IWSA): window attention plus a local interactive module."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from vit_layers_flax import ChanLayerNorm, Dense, SoftmaxAttention, merge_windows, partition_windows
from vit_layers_flax.typing import Array, Dtype


class InteractiveWindowedSelfAttention(nn.Module):
    """vit-pytorch's ``scalable_vit.InteractiveWindowedSelfAttention``:
    ``(batch, H, W, dim) -> (batch, H, W, dim)``.

    The map is normalised over channels (``norm``, ``g``/``b``) and projected pointwise to
    queries, keys (``heads * dim_key``) and values (``heads * dim_value``) without bias
    (``to_q``, ``to_k``, ``to_v``). The *local interactive module* (LIM,
    ``local_interactive_module``: a full 3 x 3 convolution with padding 1 and bias) runs on
    the whole value map, so it mixes values across window borders. Attention runs inside
    non-overlapping ``window_size x window_size`` windows (``None``: one window covering the
    map; ``H`` and ``W`` multiples of the window, which the model checks per stage), the
    windows folded into the batch axis (:func:`vit_layers_flax.partition_windows`,
    an einops rearrange); scale ``dim_key ** -0.5``. The windows are merged back, the LIM
    output added, and the sum projected to ``dim`` (``to_out``, pointwise, with bias).
    ``dropout`` acts on the attention weights and after ``to_out``, only when ``train=True``.
    """

    dim: int
    window_size: int | None
    heads: int = 8
    dim_key: int = 32
    dim_value: int = 32
    dropout: float = 0.0
    implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        _, height, width, _ = x.shape
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        window = (height, width) if self.window_size is None else (self.window_size, self.window_size)
        inner_key, inner_value = self.heads * self.dim_key, self.heads * self.dim_value

        x = ChanLayerNorm(name="norm", **dtypes)(x)
        q = Dense(inner_key, use_bias=False, name="to_q", **dtypes)(x)
        k = Dense(inner_key, use_bias=False, name="to_k", **dtypes)(x)
        v = Dense(inner_value, use_bias=False, name="to_v", **dtypes)(x)

        local_out = nn.Conv(
            inner_value, (3, 3), padding=((1, 1), (1, 1)), name="local_interactive_module", **dtypes
        )(v)

        # windows on the batch axis, heads split from the channels as (heads d)
        q, k, v = (
            rearrange(partition_windows(t, window), "n t (h d) -> n t h d", h=self.heads) for t in (q, k, v)
        )
        out = SoftmaxAttention(self.dropout, self.implementation, name="attend")(q, k, v, train=train)
        out = merge_windows(rearrange(out, "n t h d -> n t (h d)"), window, (height, width))

        out = Dense(self.dim, name="to_out", **dtypes)(out + local_out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)
