"""ViT for small-size datasets (Lee et al., 2021), after vit-pytorch's ``vit_for_small_dataset.py``.

A ViT whose patch embedding is :class:`~vit_small_datasets_flax.SPT` and whose
attention is :class:`~vit_small_datasets_flax.LSA`; the transformer stack is the shared
one, without a final LayerNorm (the reference normalises in ``mlp_head`` instead).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from vit_layers_flax import MlpHead, Transformer, check_config, check_images, pair
from vit_layers_flax.typing import Array, Dtype
from vit_small_datasets_flax.lsa import LSA
from vit_small_datasets_flax.spt import SPT


class ViT(nn.Module):
    """Vision Transformer for small-size datasets: SPT tokens, LSA blocks, a class token.

    ``(batch, height, width, channels) -> (batch, num_classes)``.

    Attributes follow vit-pytorch's ``vit_for_small_dataset.ViT``; ``image_size`` takes an
    int or a ``(height, width)`` pair, and so does ``patch_size`` (the reference takes an
    int only). As in the reference, the class token is always prepended and the
    position embedding always covers it: ``pool='mean'`` averages over all tokens, the
    class token included. ``dropout`` acts in attention (weights and output) and
    feed-forward blocks, ``emb_dropout`` after the position embedding, both only when
    ``train=True`` (rng stream ``'dropout'``). ``remat`` rematerialises each block in the
    backward pass. ``dtype`` is the computation dtype, ``param_dtype`` the parameters'.

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
    channels: int = 3
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        check_config(
            min(self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim, self.channels, ph, pw) > 0,
            "ViT: sizes must be positive",
        )
        check_config(
            ih % ph == 0 and iw % pw == 0,
            f"ViT: image_size {(ih, iw)} must be divisible by patch_size {(ph, pw)}",
        )
        check_config(
            self.pool in ("cls", "mean"), f"ViT: pool must be 'cls' or 'mean', received {self.pool!r}"
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        image_size = pair(self.image_size)
        batch = check_images(img, channels=self.channels, image_size=image_size, name="ViT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = SPT(self.dim, self.patch_size, self.channels, name="to_patch_embedding", **dtypes)(img)
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        cls_token = self.param("cls_token", init, (1, 1, self.dim), self.param_dtype)
        pos_embedding = self.param("pos_embedding", init, (1, x.shape[1] + 1, self.dim), self.param_dtype)

        cls_tokens = repeat(cls_token.astype(x.dtype), "1 n d -> b n d", b=batch)
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
            attention_cls=LSA,
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )(x, train=train)
        x = x.mean(axis=1) if self.pool == "mean" else x[:, 0]
        return MlpHead(self.num_classes, name="mlp_head", **dtypes)(x)
