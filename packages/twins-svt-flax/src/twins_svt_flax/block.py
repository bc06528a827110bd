"""One Twins-SVT block: local attention, feed-forward, global attention, feed-forward."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from twins_svt_flax.attention import GlobalAttention, LocalAttention
from vit_layers_flax import FeedForward
from vit_layers_flax.typing import Array, Dtype


class TwinsBlock(nn.Module):
    """``(batch, H, W, dim) -> (batch, H, W, dim)``, four pre-norm residual steps:

    ``x + LocalAttention(x)`` (``local_attn``), ``x + FeedForward(x)`` (``ff1``),
    ``x + GlobalAttention(x)`` (``global_attn``), ``x + FeedForward(x)`` (``ff2``), the
    reference's ``layers.{i}.0`` to ``.3``. With ``has_local=False`` (the last stage) the
    first two are skipped (the reference's ``nn.Identity``). The feed-forwards are the
    reference's conv feed-forward (channel LayerNorm, 1x1 conv, GELU, dropout, 1x1 conv,
    dropout), i.e. the shared :class:`vit_layers_flax.FeedForward` on the channel axis.

    Built by :class:`vit_layers_flax.Transformer` (``block_cls``), whose block interface
    fixes the first fields; ``attention_cls`` is accepted for that interface and ignored
    (a Twins block always has its own two attentions), ``attention_kwargs`` (e.g. the
    ``implementation`` of :func:`jax.nn.dot_product_attention`) go to both attentions.
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    attention_cls: Any = None
    attention_kwargs: Mapping[str, Any] | None = None
    local_patch_size: int = 7
    global_k: int = 7
    has_local: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attention = dict(heads=self.heads, dim_head=self.dim_head, dropout=self.dropout, **dtypes)
        attention.update(self.attention_kwargs or {})
        feed_forward = dict(dim=self.dim, hidden_dim=self.mlp_dim, dropout=self.dropout, **dtypes)
        if self.has_local:
            local = LocalAttention(self.dim, patch_size=self.local_patch_size, name="local_attn", **attention)
            x = x + local(x, train=train)
            x = x + FeedForward(name="ff1", **feed_forward)(x, train=train)
        global_ = GlobalAttention(self.dim, k=self.global_k, name="global_attn", **attention)
        x = x + global_(x, train=train)
        return x + FeedForward(name="ff2", **feed_forward)(x, train=train)
