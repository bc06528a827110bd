"""The transformer stack with a PatchMerger after one of its layers."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from patch_merger_flax.patch_merger import PatchMerger
from vit_layers_flax import LayerNorm, TransformerBlock
from vit_layers_flax.typing import Array, Dtype


class Transformer(nn.Module):
    """``depth`` shared :class:`~vit_layers_flax.TransformerBlock` s (``layers_0`` ...) with a
    :class:`PatchMerger` (``patch_merger``) after block ``patch_merge_layer`` (1-based), then
    a final LayerNorm ``norm``.

    ``(batch, tokens, dim) -> (batch, patch_merge_num_tokens, dim)``, as the ``Transformer`` of
    vit-pytorch's ``vit_with_patch_merger.py``. ``remat=True`` rematerialises each block in
    the backward pass; ``attention_implementation`` goes to
    :func:`jax.nn.dot_product_attention`.
    """

    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    patch_merge_layer: int = 1
    patch_merge_num_tokens: int = 8
    remat: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_cls = nn.remat(TransformerBlock, static_argnums=(2,)) if self.remat else TransformerBlock
        for i in range(self.depth):
            x = block_cls(
                self.dim,
                self.heads,
                self.dim_head,
                self.mlp_dim,
                dropout=self.dropout,
                attention_kwargs={"implementation": self.attention_implementation},
                name=f"layers_{i}",
                **dtypes,
            )(x, train)
            if i == self.patch_merge_layer - 1:
                x = PatchMerger(self.dim, self.patch_merge_num_tokens, name="patch_merger", **dtypes)(x)
        return LayerNorm(name="norm", **dtypes)(x)
