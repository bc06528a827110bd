"""DeepViT: "Towards Deeper Vision Transformer" (Zhou et al., 2021), after vit-pytorch's ``deepvit.py``."""

from __future__ import annotations

import functools

import flax.linen as nn

from deepvit_flax.re_attention import ReAttention
from vit_layers_flax import (
    ClassifierHead,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    PatchEmbedding,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    block_features,
    check_config,
    check_images,
    pool_tokens,
    token_map,
)
from vit_layers_flax.typing import Array


class DeepViT(ImageClassifier):
    """ViT whose blocks attend with re-attention (:class:`ReAttention`), with a class token.

    Zhou et al., "DeepViT: Towards Deeper Vision Transformer", 2021 (arXiv:2103.11886).
    Feature maps: the patch grid after each block. ``image_size`` and ``patch_size`` are ints
    (square, as in the reference). The class token is always prepended: ``pool='mean'``
    averages all tokens, the class token included. The encoder has no final LayerNorm; the
    head is ``LayerNorm -> Dense``. ``dropout`` acts on the attention weights and in the
    blocks, ``emb_dropout`` after the position embedding.
    """

    image_size: int
    patch_size: int
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
        check_config(
            isinstance(self.image_size, int) and isinstance(self.patch_size, int),
            f"DeepViT: image_size and patch_size must be ints (square images and patches, as in the "
            f"reference), received {self.image_size!r} and {self.patch_size!r}",
        )
        check_config(
            min(self.patch_size, self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim) > 0,
            "DeepViT: sizes must be positive",
        )
        check_config(
            self.image_size % self.patch_size == 0,
            f"DeepViT: image_size {self.image_size} must be divisible by patch_size {self.patch_size}",
        )
        check_config(
            self.pool in ("cls", "mean"), f"DeepViT: pool must be 'cls' or 'mean', received {self.pool!r}"
        )
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        """``image_size`` alone: the position embedding fixes it."""
        return InputSizes(self.image_size)

    @property
    def num_features(self) -> int:
        return self.dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        return block_features(self.dim, self.patch_size, self.depth)

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        size = (self.image_size, self.image_size)
        check_images(img, channels=self.channels, image_size=size, name="DeepViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbedding(self.dim, (self.patch_size,) * 2, name="to_patch_embedding", **dtypes)(img)
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
            attention=ReAttention,
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
            grid = (self.image_size // self.patch_size,) * 2
            _, blocks = transformer(x, train=train, return_features=True)
            return self.select_features([token_map(b, grid, 1) for b in blocks])
        x = pool_tokens(transformer(x, train=train), self.pool)
        return ClassifierHead(self.num_classes, name="mlp_head", **dtypes)(x, pre_logits=pre_logits)
