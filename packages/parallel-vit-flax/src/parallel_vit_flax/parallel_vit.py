"""Parallel ViT: "Three things everyone should know about Vision Transformers" (Touvron et al.,
2022), after vit-pytorch's ``parallel_vit.py``."""

from __future__ import annotations

import functools

import flax.linen as nn

from parallel_vit_flax.parallel_block import ParallelTransformerBlock
from vit_layers_flax import (
    Attention,
    ClassifierHead,
    Dense,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    TokenEmbedding,
    Transformer,
    block_features,
    check_config,
    check_images,
    pair,
    patchify,
    pool_tokens,
    token_map,
)
from vit_layers_flax.typing import Array


class ViT(ImageClassifier):
    """ViT whose layers sum ``num_parallel_branches`` attention branches, then as many
    feed-forward branches (:class:`ParallelTransformerBlock`).

    Touvron et al., "Three things everyone should know about Vision Transformers", ECCV 2022
    (arXiv:2203.09795). Feature maps: the patch grid after each layer.
    ``image_size`` and ``patch_size`` take an int or a ``(height, width)`` pair. As in the
    reference, the patch embedding is one ``Dense``, the class token is always prepended
    (``pool='mean'`` averages it too), the encoder has no final LayerNorm and the head is
    ``LayerNorm -> Dense``. ``dropout`` acts in the branches, ``emb_dropout`` after the
    position embedding.
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
    attention_implementation: str | None = None

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
        x = Dense(self.dim, name="to_patch_embedding", **dtypes)(patchify(img, pair(self.patch_size)))
        x = TokenEmbedding(1, self.emb_dropout, param_dtype=self.param_dtype, name="embedding")(
            x, train=train
        )
        block = functools.partial(
            ParallelTransformerBlock,
            self.dim,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            attention=functools.partial(Attention, implementation=self.attention_implementation),
            num_parallel_branches=self.num_parallel_branches,
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
