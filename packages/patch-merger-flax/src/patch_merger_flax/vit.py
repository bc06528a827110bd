"""ViT with a PatchMerger, after vit-pytorch's ``vit_with_patch_merger.py``."""

from __future__ import annotations

import flax.linen as nn

from patch_merger_flax.transformer import MergingTransformer
from vit_layers_flax import (
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    PatchEmbedding,
    TokenEmbedding,
    block_features,
    check_config,
    check_images,
    pair,
    pool_tokens,
    token_map,
)
from vit_layers_flax.typing import Array


class ViT(ImageClassifier):
    """Vision Transformer whose tokens are merged mid-way: ``(batch, H, W, channels) -> (batch, num_classes)``.

    Renggli, Susano Pinto, Houlsby, Mustafa, Puigcerver, Riquelme, "Learning to Merge Tokens
    in Vision Transformers", 2022 (arXiv:2202.12015). Arguments are vit-pytorch's: there is
    no class token; after block ``patch_merge_layer`` (1-based, default ``depth // 2``) a
    :class:`~patch_merger_flax.PatchMerger` replaces the patch tokens by
    ``patch_merge_num_tokens`` ones, and the head classifies their mean. ``image_size`` and
    ``patch_size`` take an int or a ``(height, width)`` pair. With ``scan`` the blocks
    before and after the merger are two scanned stacks (``layers``, ``merged_layers``).
    Feature maps: the patch grid after each block before the merger (merged tokens have none).
    """

    image_size: int | tuple[int, int]
    patch_size: int | tuple[int, int]
    num_classes: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    patch_merge_layer: int | None = None
    patch_merge_num_tokens: int = 8
    channels: int = 3
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    attention_implementation: str | None = None

    @property
    def merge_layer(self) -> int:
        """The 1-based block after which tokens are merged (``depth // 2`` by default)."""
        return self.depth // 2 if self.patch_merge_layer is None else self.patch_merge_layer

    def input_sizes(self) -> InputSizes:
        """``image_size`` alone: the position embedding fixes it."""
        return InputSizes.fixed(self.image_size)

    def __post_init__(self):
        (ih, iw), (ph, pw) = pair(self.image_size), pair(self.patch_size)
        check_config(
            ih % ph == 0 and iw % pw == 0,
            f"ViT: image_size {(ih, iw)} must be divisible by patch_size {(ph, pw)}",
        )
        check_config(
            min(self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim) > 0,
            "ViT: sizes must be positive",
        )
        check_config(self.num_classes >= 0, f"ViT: num_classes must be >= 0, received {self.num_classes}")
        check_config(self.patch_merge_num_tokens > 0, "ViT: patch_merge_num_tokens must be positive")
        check_config(
            1 <= self.merge_layer <= self.depth,
            f"ViT: patch_merge_layer must be between 1 and depth={self.depth}, received "
            f"{self.merge_layer}" + (" (the default depth // 2)" if self.patch_merge_layer is None else ""),
        )
        super().__post_init__()

    @property
    def num_features(self) -> int:
        return self.dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        return block_features(self.dim, pair(self.patch_size), self.merge_layer)

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        image_size, patch_size = pair(self.image_size), pair(self.patch_size)
        check_images(img, channels=self.channels, image_size=image_size, name="ViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = PatchEmbedding(self.dim, patch_size, name="to_patch_embedding", **dtypes)(img)
        # the reference allocates a position for a class token it never adds (one row unused)
        embedding = TokenEmbedding(
            0, self.emb_dropout, x.shape[1] + 1, param_dtype=self.param_dtype, name="embedding"
        )
        x = embedding(x, train=train)

        transformer = MergingTransformer(
            self.dim,
            self.depth,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            patch_merge_layer=self.merge_layer,
            patch_merge_num_tokens=self.patch_merge_num_tokens,
            remat=self.remat,
            scan=self.scan,
            attention_implementation=self.attention_implementation,
            name="transformer",
            **dtypes,
        )
        if return_features:
            grid = tuple(i // p for i, p in zip(image_size, patch_size, strict=True))
            blocks = transformer(x, train=train, return_features=True)
            return self.select_features([token_map(b, grid) for b in blocks])
        x = transformer(x, train=train)
        return self.classify(pool_tokens(x, "mean"), pre_logits=pre_logits, name="mlp_head")
