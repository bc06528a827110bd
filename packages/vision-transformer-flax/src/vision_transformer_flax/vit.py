"""ViT: "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021), after vit-pytorch's ``vit.py``."""

from __future__ import annotations

import functools

import flax.linen as nn

from vit_layers_flax import (
    Attention,
    FeatureInfo,
    FeedForward,
    ImageClassifier,
    InputSizes,
    PatchEmbedding,
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


class ViT(ImageClassifier):
    """The Vision Transformer: patch tokens, a class token or mean pooling, a pre-norm encoder.

    Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
    Scale", ICLR 2021 (arXiv:2010.11929). Feature maps: the patch grid after each block.
    ``image_size`` and ``patch_size`` take an int or a ``(height, width)`` pair; ``pool`` is
    ``'cls'`` (a class token) or ``'mean'`` (the mean of the patch tokens, no class token);
    ``dropout`` acts in the blocks, ``emb_dropout`` after the position embedding.

    The defaults are vit-pytorch's architecture. The original ViT's (timm's, big_vision's, and
    DeiT's; the pretrained presets) is ``patch_norms=False`` (no LayerNorm before and after the
    patch projection), ``qkv_bias=True`` and ``norm_epsilon=1e-6``. ``distilled=True`` is
    DeiT's distillation token: a second prefix token read by a second head ``head_dist``; the
    logits are the mean of both heads', the pooled features the mean of both tokens.
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
    attention_implementation: str | None = None
    patch_norms: bool = True
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    distilled: bool = False

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
            not self.distilled or self.pool == "cls",
            "ViT: distilled needs pool='cls' (the distillation token follows the class token)",
        )
        check_config(
            min(self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim) > 0,
            "ViT: sizes must be positive",
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
        x = PatchEmbedding(
            self.dim, pair(self.patch_size), norms=self.patch_norms, name="to_patch_embedding", **dtypes
        )(img)
        class_tokens = (1 + self.distilled) if self.pool == "cls" else 0
        embedding = TokenEmbedding(
            class_tokens, self.emb_dropout, param_dtype=self.param_dtype, name="embedding"
        )
        x = embedding(x, train=train)
        eps = self.norm_epsilon
        attention = functools.partial(
            Attention, implementation=self.attention_implementation, qkv_bias=self.qkv_bias, norm_epsilon=eps
        )
        block = functools.partial(
            TransformerBlock,
            self.dim,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            attention=attention,
            feed_forward=functools.partial(FeedForward, norm_epsilon=eps),
            **dtypes,
        )
        transformer = Transformer(
            self.depth,
            block,
            norm_epsilon=eps,
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )
        if return_features:
            grid = tuple(i // p for i, p in zip(pair(self.image_size), pair(self.patch_size), strict=True))
            _, blocks = transformer(x, train=train, return_features=True)
            return self.select_features([token_map(b, grid, class_tokens) for b in blocks])
        x = transformer(x, train=train)
        if not self.distilled:
            return self.classify(pool_tokens(x, self.pool), pre_logits=pre_logits)
        if pre_logits or not self.num_classes:
            return (x[:, 0] + x[:, 1]) / 2
        head, head_dist = (
            self.classify(x[:, 0], pre_logits=False),
            self.classify(x[:, 1], pre_logits=False, name="head_dist"),
        )
        return (head + head_dist) / 2
