"""Parallel ViT: "Three things everyone should know about Vision Transformers" (Touvron et al.,
2022), after vit-pytorch's ``parallel_vit.py``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from parallel_vit_flax.parallel_block import ParallelTransformerBlock
from vit_layers_flax import Dense, MlpHead, Transformer, check_config, check_images, pair, patchify
from vit_layers_flax.typing import Array, Dtype


class ViT(nn.Module):
    """ViT whose blocks run ``num_parallel_branches`` attention branches side by side, then as
    many feed-forward branches, summing each group into the residual stream.

    ``(batch, height, width, channels) -> (batch, num_classes)``.

    Attributes follow vit-pytorch's ``parallel_vit.ViT``; ``image_size`` and ``patch_size``
    take an int or a ``(height, width)`` pair. As in the reference, the patch embedding is a
    single ``Dense`` on ``(p1 p2 c)``-flattened patches (no LayerNorms), the class token is
    always prepended (``pool='mean'`` averages all tokens, the class token included), the
    transformer has no final LayerNorm and the head is ``LayerNorm -> Dense``. ``dropout``
    acts in the attention and feed-forward branches, ``emb_dropout`` after the position
    embedding, both only when ``train=True`` (rng stream ``'dropout'``). ``remat``
    rematerialises each block in the backward pass; ``attention_implementation`` is passed
    to :func:`jax.nn.dot_product_attention` (``None``, ``'xla'`` or ``'cudnn'``). ``dtype``
    is the computation dtype, ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
    """

    image_size: int | tuple[int, int]
    patch_size: int | tuple[int, int]
    num_classes: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    pool: str = "cls"
    num_parallel_branches: int = 2
    channels: int = 3
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        check_config(
            min(ph, pw, self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim) > 0,
            "ViT: sizes must be positive",
        )
        check_config(
            ih % ph == 0 and iw % pw == 0,
            f"ViT: image_size {(ih, iw)} must be divisible by patch_size {(ph, pw)}",
        )
        check_config(
            self.pool in ("cls", "mean"), f"ViT: pool must be 'cls' or 'mean', received {self.pool!r}"
        )
        check_config(
            self.num_parallel_branches > 0,
            f"ViT: num_parallel_branches must be at least 1, received {self.num_parallel_branches}",
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        image_size, patch_size = pair(self.image_size), pair(self.patch_size)
        batch = check_images(img, channels=self.channels, image_size=image_size, name="ViT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = Dense(self.dim, name="to_patch_embedding", **dtypes)(patchify(img, patch_size))
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        pos_embedding = self.param("pos_embedding", init, (1, x.shape[1] + 1, self.dim), self.param_dtype)
        cls_token = self.param("cls_token", init, (1, 1, self.dim), self.param_dtype)

        cls_tokens = repeat(cls_token.astype(x.dtype), "() n d -> b n d", b=batch)
        x = jnp.concatenate([cls_tokens, x], axis=1) + pos_embedding.astype(x.dtype)
        x = nn.Dropout(self.emb_dropout)(x, deterministic=not train)

        x = Transformer(
            self.dim,
            self.depth,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            final_norm=False,
            attention_kwargs={"implementation": self.attention_implementation},
            block_cls=ParallelTransformerBlock,
            block_kwargs={"num_parallel_branches": self.num_parallel_branches},
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )(x, train=train)

        x = x.mean(axis=1) if self.pool == "mean" else x[:, 0]
        return MlpHead(self.num_classes, name="mlp_head", **dtypes)(x)
