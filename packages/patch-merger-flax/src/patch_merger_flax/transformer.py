"""The transformer stack with a PatchMerger after one of its blocks."""

from __future__ import annotations

import functools

import flax.linen as nn

from patch_merger_flax.patch_merger import PatchMerger
from vit_layers_flax import Attention, LayerNorm, Model, TransformerBlock, apply_blocks
from vit_layers_flax.typing import Array


class MergingTransformer(Model):
    """``depth`` :class:`~vit_layers_flax.TransformerBlock` s with a :class:`PatchMerger`
    (``patch_merger``) after block ``patch_merge_layer`` (1-based), then a LayerNorm ``norm``.

    ``(batch, tokens, dim) -> (batch, patch_merge_num_tokens, dim)``, as the ``Transformer``
    of vit-pytorch's ``vit_with_patch_merger.py``. The blocks before the merger are
    ``layers_0`` ... (one :func:`~vit_layers_flax.apply_blocks` stack), those after it, which
    see the merged tokens, ``merged_layers_0`` ... (another; the reference's
    ``layers.{patch_merge_layer}`` ...). ``return_features=True`` returns only the outputs
    of the blocks before the merger (a tuple; the merger and what follows do not run).
    """

    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    patch_merge_layer: int = 1
    patch_merge_num_tokens: int = 8
    attention_implementation: str | None = None

    @nn.compact
    def __call__(
        self, x: Array, *, train: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = functools.partial(
            TransformerBlock,
            self.dim,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            attention=functools.partial(Attention, implementation=self.attention_implementation),
            **dtypes,
        )
        stack = dict(train=train, scan=self.scan, remat=self.remat)
        if return_features:
            stack["collect"] = True
            return apply_blocks(lambda name: block(name=name), self.patch_merge_layer, x, **stack)[1]
        x = apply_blocks(lambda name: block(name=name), self.patch_merge_layer, x, **stack)
        x = PatchMerger(self.dim, self.patch_merge_num_tokens, name="patch_merger", **dtypes)(x)
        merged_depth = self.depth - self.patch_merge_layer
        x = apply_blocks(lambda name: block(name=f"merged_{name}"), merged_depth, x, **stack)
        return LayerNorm(name="norm", **dtypes)(x)
