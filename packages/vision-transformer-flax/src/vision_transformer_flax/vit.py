"""ViT: "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021), after vit-pytorch's ``vit.py``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from vit_layers_flax import PatchEmbedding, Transformer, check_config, check_images, pair
from vit_layers_flax.typing import Array, Dtype


class ViT(nn.Module):
    """Vision Transformer with a class token (or mean pooling) and learned position embedding.

    ``(batch, height, width, channels) -> (batch, num_classes)``; with ``num_classes == 0``
    the model returns the encoded tokens ``(batch, tokens, dim)`` instead.

    Attributes follow vit-pytorch's ``ViT``; ``image_size`` and ``patch_size`` take an int
    or a ``(height, width)`` pair. ``dropout`` acts in attention and feed-forward blocks,
    ``emb_dropout`` after the position embedding, both only when ``train=True`` (rng stream
    ``'dropout'``). ``remat`` rematerialises each block in the backward pass;
    ``attention_implementation`` is passed to :func:`jax.nn.dot_product_attention`
    (``None``, ``'xla'`` or ``'cudnn'``). ``dtype`` is the computation dtype,
    ``param_dtype`` the parameters'.

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
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        check_config(
            ih % ph == 0 and iw % pw == 0,
            f"ViT: image_size {(ih, iw)} must be divisible by patch_size {(ph, pw)}",
        )
        check_config(
            self.pool in ("cls", "mean"), f"ViT: pool must be 'cls' or 'mean', received {self.pool!r}"
        )
        check_config(
            min(self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim) > 0,
            "ViT: sizes must be positive",
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        image_size, patch_size = pair(self.image_size), pair(self.patch_size)
        batch = check_images(img, channels=self.channels, image_size=image_size, name="ViT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = PatchEmbedding(self.dim, patch_size, name="to_patch_embedding", **dtypes)(img)
        num_cls_tokens = 1 if self.pool == "cls" else 0
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        cls_token = self.param("cls_token", init, (num_cls_tokens, self.dim), self.param_dtype)
        pos_embedding = self.param(
            "pos_embedding", init, (x.shape[1] + num_cls_tokens, self.dim), self.param_dtype
        )

        cls_tokens = repeat(cls_token.astype(x.dtype), "n d -> b n d", b=batch)
        x = jnp.concatenate([cls_tokens, x], axis=1) + pos_embedding.astype(x.dtype)
        x = nn.Dropout(self.emb_dropout)(x, deterministic=not train)

        x = Transformer(
            self.dim,
            self.depth,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            remat=self.remat,
            scan=self.scan,
            attention_kwargs={"implementation": self.attention_implementation},
            name="transformer",
            **dtypes,
        )(x, train=train)
        if self.num_classes <= 0:
            return x
        x = x.mean(axis=1) if self.pool == "mean" else x[:, 0]
        return nn.Dense(self.num_classes, name="mlp_head", **dtypes)(x)
