"""The multi-scale transformer encoder (Chen et al., 2021, figure 2), after vit-pytorch's
``cross_vit.MultiScaleEncoder``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from crossvit_flax.cross_attention import CrossTransformer
from vit_layers_flax import Transformer
from vit_layers_flax.typing import Array, Dtype


class MultiScaleEncoder(nn.Module):
    """``depth`` multi-scale blocks: each branch's own transformer, then cross-attention fusion.

    ``sm_tokens: (batch, 1 + sm_patches, sm_dim)``, ``lg_tokens: (batch, 1 + lg_patches, lg_dim)``
    ``-> (sm_tokens, lg_tokens)`` of the same shapes.

    Block ``i`` runs the small branch's :class:`vit_layers_flax.Transformer` ``sm_enc_{i}``
    (``sm_enc_depth`` layers, final LayerNorm) and the large branch's ``lg_enc_{i}``, then the
    :class:`CrossTransformer` ``cross_attend_{i}`` (the reference's
    ``layers.{i}.0``, ``.1``, ``.2``). The branch attentions always have their output
    projection ``to_out``, as the reference's, even with one head of width ``dim``.
    ``remat`` rematerialises each branch-transformer layer in the backward pass.
    ``scan`` runs each branch transformer's layers as one ``nn.scan``.
    """

    depth: int
    sm_dim: int
    lg_dim: int
    sm_enc_depth: int
    sm_enc_heads: int
    sm_enc_mlp_dim: int
    sm_enc_dim_head: int
    lg_enc_depth: int
    lg_enc_heads: int
    lg_enc_mlp_dim: int
    lg_enc_dim_head: int
    cross_attn_heads: int
    cross_attn_depth: int
    cross_attn_dim_head: int = 64
    dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, sm_tokens: Array, lg_tokens: Array, *, train: bool = False) -> tuple[Array, Array]:
        common = dict(
            dropout=self.dropout,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        encoder = dict(
            remat=self.remat,
            scan=self.scan,
            attention_kwargs={"project_out": True, "implementation": self.attention_implementation},
            **common,
        )
        for i in range(self.depth):
            sm_tokens = Transformer(
                self.sm_dim,
                self.sm_enc_depth,
                self.sm_enc_heads,
                self.sm_enc_dim_head,
                self.sm_enc_mlp_dim,
                name=f"sm_enc_{i}",
                **encoder,
            )(sm_tokens, train=train)
            lg_tokens = Transformer(
                self.lg_dim,
                self.lg_enc_depth,
                self.lg_enc_heads,
                self.lg_enc_dim_head,
                self.lg_enc_mlp_dim,
                name=f"lg_enc_{i}",
                **encoder,
            )(lg_tokens, train=train)
            sm_tokens, lg_tokens = CrossTransformer(
                self.sm_dim,
                self.lg_dim,
                self.cross_attn_depth,
                self.cross_attn_heads,
                self.cross_attn_dim_head,
                implementation=self.attention_implementation,
                name=f"cross_attend_{i}",
                **common,
            )(sm_tokens, lg_tokens, train=train)
        return sm_tokens, lg_tokens
