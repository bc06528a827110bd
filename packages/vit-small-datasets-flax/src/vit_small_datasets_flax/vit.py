"""ViT for small-size datasets (Lee et al., 2021), after vit-pytorch's ``vit_for_small_dataset.py``."""

from __future__ import annotations

import functools

import flax.linen as nn

from vit_layers_flax import (
    ClassifierHead,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    block_features,
    check_config,
    check_images,
    pair,
    pool_tokens,
    token_map,
)
from vit_layers_flax.typing import Array
from vit_small_datasets_flax.lsa import LSA
from vit_small_datasets_flax.spt import SPT


class ViT(ImageClassifier):
    """Vision Transformer for small-size datasets: :class:`SPT` tokens, :class:`LSA` blocks.

    Lee, Lee and Song, "Vision Transformer for Small-Size Datasets", 2021 (arXiv:2112.13492).
    Feature maps: the patch grid after each block. ``image_size`` and ``patch_size`` take an
    int or a ``(height, width)`` pair (the reference's patch size is an int). As in the
    reference, the class token is always prepended (``pool='mean'`` averages it too), the
    encoder has no final LayerNorm and the head is ``LayerNorm -> Dense``. ``dropout`` acts
    in the blocks, ``emb_dropout`` after the position embedding.
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
        check_images(img, channels=self.channels, image_size=pair(self.image_size), name="ViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = SPT(self.dim, self.patch_size, self.channels, name="to_patch_embedding", **dtypes)(img)
        x = TokenEmbedding(1, self.emb_dropout, param_dtype=self.param_dtype, name="embedding")(
            x, train=train
        )
        block = functools.partial(
            TransformerBlock,
            self.dim,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            attention=LSA,
            **dtypes,
        )
        transformer = Transformer(
            self.depth,
            block,
            final_norm=False,
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )
        if return_features:
            grid = tuple(i // p for i, p in zip(pair(self.image_size), pair(self.patch_size), strict=True))
            _, blocks = transformer(x, train=train, return_features=True)
            return self.select_features([token_map(b, grid, 1) for b in blocks])
        x = pool_tokens(transformer(x, train=train), self.pool)
        return ClassifierHead(self.num_classes, name="mlp_head", **dtypes)(x, pre_logits=pre_logits)
