"""The transformer stack with a PatchMerger after one of its layers."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from patch_merger_flax.patch_merger import PatchMerger
from vit_layers_flax import LayerNorm, TransformerBlock, apply_blocks
from vit_layers_flax.typing import Array, Dtype


class Transformer(nn.Module):
    """``depth`` shared :class:`~vit_layers_flax.TransformerBlock` s with a :class:`PatchMerger`
    (``patch_merger``) after block ``patch_merge_layer`` (1-based), then a final LayerNorm
    ``norm``.

    ``(batch, tokens, dim) -> (batch, patch_merge_num_tokens, dim)``, as the ``Transformer`` of
    vit-pytorch's ``vit_with_patch_merger.py``. The blocks before the merger are ``layers_0``
    ... and those after it, which see the merged tokens, ``merged_layers_0`` ... (the
    reference's ``layers.{patch_merge_layer}`` ...). ``remat=True`` rematerialises each block
    in the backward pass; ``scan=True`` runs each of the two stacks as one ``nn.scan``
    (``layers`` and ``merged_layers``, parameters with a leading axis; see
    :func:`vit_layers_flax.apply_blocks`); ``attention_implementation`` goes to
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
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_cls = TransformerBlock
        if self.remat:  # under scan, CSE cannot undo the rematerialisation (flax's advice)
            block_cls = nn.remat(block_cls, static_argnums=(2,), prevent_cse=not self.scan)

        def make_block(name: str) -> nn.Module:
            return block_cls(
                self.dim,
                self.heads,
                self.dim_head,
                self.mlp_dim,
                dropout=self.dropout,
                attention_kwargs={"implementation": self.attention_implementation},
                name=name,
                **dtypes,
            )

        x = apply_blocks(make_block, self.patch_merge_layer, x, train=train, scan=self.scan)
        x = PatchMerger(self.dim, self.patch_merge_num_tokens, name="patch_merger", **dtypes)(x)
        x = apply_blocks(
            lambda name: make_block(f"merged_{name}"),
            self.depth - self.patch_merge_layer,
            x,
            train=train,
            scan=self.scan,
        )
        return LayerNorm(name="norm", **dtypes)(x)
