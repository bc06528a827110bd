"""The local transformer NesT runs inside every block (the reference's ``nest.Transformer``)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import TransformerBlock, apply_blocks
from vit_layers_flax.typing import Array, Dtype


class LocalTransformer(nn.Module):
    """Position embedding, then ``depth`` pre-norm blocks; ``(blocks, tokens, dim)`` in and out.

    ``pos_emb`` holds one scalar per position (``(seq_len,)``, ``torch.randn``), added to
    every channel; a block with fewer than ``seq_len`` tokens uses the first ``tokens``
    entries, as the reference does. The blocks (``layers_{i}``, each ``attn`` and ``ff``)
    are the shared :class:`~vit_layers_flax.TransformerBlock` with ``dim_head = dim //
    heads``, an MLP of ``dim * mlp_mult``, an output projection even for one head, and no
    final LayerNorm. The same weights serve every block of the feature map (blocks are
    on the batch axis). ``remat=True`` rematerialises each block in the backward pass;
    ``scan=True`` runs the blocks as one ``nn.scan`` (parameters stacked under ``layers``).
    """

    dim: int
    seq_len: int
    depth: int
    heads: int
    mlp_mult: int
    dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        pos_emb = self.param("pos_emb", nn.initializers.normal(stddev=1.0), (self.seq_len,), self.param_dtype)
        x = x + pos_emb[: x.shape[1], None].astype(x.dtype)
        block_cls = TransformerBlock
        if self.remat:
            block_cls = nn.remat(block_cls, static_argnums=(2,), prevent_cse=not self.scan)
        attention_kwargs = {"project_out": True, "implementation": self.attention_implementation}
        return apply_blocks(
            lambda name: block_cls(
                self.dim,
                self.heads,
                self.dim // self.heads,
                self.dim * self.mlp_mult,
                dropout=self.dropout,
                attention_kwargs=attention_kwargs,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            ),
            self.depth,
            x,
            train=train,
            scan=self.scan,
        )
