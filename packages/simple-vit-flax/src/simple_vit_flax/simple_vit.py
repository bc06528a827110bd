"""SimpleViT: "Better plain ViT baselines for ImageNet-1k" (Beyer et al., 2022),
after vit-pytorch's ``simple_vit.py``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import (
    PatchEmbedding,
    Transformer,
    check_config,
    check_images,
    pair,
    posemb_sincos_2d,
)
from vit_layers_flax.typing import Array, Dtype


class SimpleViT(nn.Module):
    """ViT with a fixed 2-D sin-cos position embedding, global average pooling, no dropout,
    no class token and bias-free attention projections.

    ``(batch, height, width, channels) -> (batch, num_classes)``.

    ``dim`` must be divisible by 4 (the sin-cos embedding). ``remat`` rematerialises each
    block in the backward pass; ``attention_implementation`` is passed to
    :func:`jax.nn.dot_product_attention`; ``dtype`` is the computation dtype,
    ``param_dtype`` the parameters'. The position embedding is a constant, not a parameter.

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
    channels: int = 3
    dim_head: int = 64
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        check_config(
            ih % ph == 0 and iw % pw == 0,
            f"SimpleViT: image_size {(ih, iw)} must be divisible by patch_size {(ph, pw)}",
        )
        check_config(
            self.dim % 4 == 0 and self.dim >= 8,
            f"SimpleViT: dim must be a multiple of 4 and at least 8 for the sin-cos embedding, received {self.dim}",
        )
        check_config(
            min(self.depth, self.heads, self.dim_head, self.mlp_dim) > 0, "SimpleViT: sizes must be positive"
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        check_images(img, channels=self.channels, image_size=(ih, iw), name="SimpleViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = PatchEmbedding(self.dim, (ph, pw), name="to_patch_embedding", **dtypes)(img)
        x = x + jnp.asarray(posemb_sincos_2d(ih // ph, iw // pw, self.dim), x.dtype)
        x = Transformer(
            self.dim,
            self.depth,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            remat=self.remat,
            scan=self.scan,
            # SimpleViT always projects the attention output, without a bias.
            attention_kwargs={
                "project_out": True,
                "out_bias": False,
                "implementation": self.attention_implementation,
            },
            name="transformer",
            **dtypes,
        )(x, train=train)
        return nn.Dense(self.num_classes, name="linear_head", **dtypes)(x.mean(axis=1))
