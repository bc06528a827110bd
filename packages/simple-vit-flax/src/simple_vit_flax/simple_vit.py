"""SimpleViT: "Better plain ViT baselines for ImageNet-1k" (Beyer et al., 2022),
after vit-pytorch's ``simple_vit.py``."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import (
    Attention,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    PatchEmbedding,
    Transformer,
    TransformerBlock,
    block_features,
    check_config,
    check_images,
    pair,
    pool_tokens,
    posemb_sincos_2d,
    token_map,
)
from vit_layers_flax.typing import Array


class SimpleViT(ImageClassifier):
    """ViT with a fixed 2-D sin-cos position embedding, mean pooling, no class token, no
    dropout and bias-free attention output projections.

    Beyer, Zhai and Kolesnikov, "Better plain ViT baselines for ImageNet-1k", 2022
    (arXiv:2205.01580). Feature maps: the patch grid after each block.
    ``image_size`` and ``patch_size`` take an int or a ``(height, width)`` pair; ``dim`` must be
    a multiple of 4 (the sin-cos embedding, a constant rather than a parameter).
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
    attention_implementation: str | None = None

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

    def input_sizes(self) -> InputSizes:
        """``image_size`` alone: the position embedding fixes it."""
        return InputSizes.fixed(self.image_size)

    @property
    def num_features(self) -> int:
        return self.dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        return block_features(self.dim, pair(self.patch_size), self.depth)

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        check_images(img, channels=self.channels, image_size=(ih, iw), name="SimpleViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbedding(self.dim, (ph, pw), name="to_patch_embedding", **dtypes)(img)
        x = x + jnp.asarray(posemb_sincos_2d(ih // ph, iw // pw, self.dim), x.dtype)
        # the output projection is kept even for one head of width dim, and has no bias
        attention = functools.partial(
            Attention, project_out=True, out_bias=False, implementation=self.attention_implementation
        )
        block = functools.partial(
            TransformerBlock, self.dim, self.heads, self.dim_head, self.mlp_dim, attention=attention, **dtypes
        )
        transformer = Transformer(
            self.depth, block, remat=self.remat, scan=self.scan, name="transformer", **dtypes
        )
        if return_features:
            _, blocks = transformer(x, train=train, return_features=True)
            return self.select_features([token_map(b, (ih // ph, iw // pw)) for b in blocks])
        x = pool_tokens(transformer(x, train=train), "mean")
        return self.classify(x, pre_logits=pre_logits, name="linear_head")
