"""The multi-scale transformer encoder (Chen et al., 2021, figure 2), after vit-pytorch's
``cross_vit.MultiScaleEncoder``."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from crossvit_flax.cross_attention import CrossTransformer
from vit_layers_flax import Transformer, apply_blocks
from vit_layers_flax.typing import Array, Dtype


class MultiScaleBlock(nn.Module):
    """One multi-scale block: each branch's own transformer, then cross-attention fusion.

    ``(sm_tokens, lg_tokens)`` of shapes ``(batch, 1 + sm_patches, sm_dim)`` and
    ``(batch, 1 + lg_patches, lg_dim)`` in and out (the reference's ``layers.{i}``).

    ``sm_enc`` is the small branch's :class:`vit_layers_flax.Transformer` (``sm_enc_depth``
    layers, final LayerNorm; the reference's ``.0``), ``lg_enc`` the large branch's (``.1``),
    then the :class:`CrossTransformer` ``cross_attend`` (``.2``). The branch attentions
    always have their output projection ``to_out``, as the reference's, even with one head
    of width ``dim``. ``remat`` rematerialises each branch-transformer layer in the backward
    pass; ``scan`` runs each branch transformer's layers as one ``nn.scan``.
    """

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
    def __call__(self, tokens: tuple[Array, Array], train: bool = False) -> tuple[Array, Array]:
        sm_tokens, lg_tokens = tokens
        common = dict(dropout=self.dropout, dtype=self.dtype, param_dtype=self.param_dtype)
        encoder = dict(
            remat=self.remat,
            scan=self.scan,
            attention_kwargs={"project_out": True, "implementation": self.attention_implementation},
            **common,
        )
        sm_tokens = Transformer(
            self.sm_dim,
            self.sm_enc_depth,
            self.sm_enc_heads,
            self.sm_enc_dim_head,
            self.sm_enc_mlp_dim,
            name="sm_enc",
            **encoder,
        )(sm_tokens, train=train)
        lg_tokens = Transformer(
            self.lg_dim,
            self.lg_enc_depth,
            self.lg_enc_heads,
            self.lg_enc_dim_head,
            self.lg_enc_mlp_dim,
            name="lg_enc",
            **encoder,
        )(lg_tokens, train=train)
        return CrossTransformer(
            self.sm_dim,
            self.lg_dim,
            self.cross_attn_depth,
            self.cross_attn_heads,
            self.cross_attn_dim_head,
            implementation=self.attention_implementation,
            name="cross_attend",
            **common,
        )(sm_tokens, lg_tokens, train=train)


class MultiScaleEncoder(nn.Module):
    """``depth`` :class:`MultiScaleBlock` s (``layers_0`` ..., the reference's ``layers.{i}``).

    ``sm_tokens: (batch, 1 + sm_patches, sm_dim)``, ``lg_tokens: (batch, 1 + lg_patches, lg_dim)``
    ``-> (sm_tokens, lg_tokens)`` of the same shapes.

    ``scan=True`` runs the blocks as one ``nn.scan`` (``layers``, every parameter with a
    leading ``depth`` axis), and each block's branch transformers scan their own layers
    (a second leading axis after it). ``remat`` rematerialises each branch-transformer
    layer in the backward pass. The other attributes are :class:`MultiScaleBlock`'s.
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
        # every field of the block is one of this module's, passed on as it is
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(MultiScaleBlock) if f.init}
        del fields["parent"], fields["name"]
        return apply_blocks(
            lambda name: MultiScaleBlock(**fields, name=name),
            self.depth,
            (sm_tokens, lg_tokens),
            train=train,
            scan=self.scan,
        )
