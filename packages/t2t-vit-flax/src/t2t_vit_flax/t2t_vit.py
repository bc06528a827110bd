"""T2T-ViT, after vit-pytorch's ``t2t.py``."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn

from t2t_vit_flax.tokens_to_token import TokensToToken
from vit_layers_flax import (
    Attention,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    check_config,
    check_images,
    conv_output_size,
    grid_reduction,
    pool_tokens,
    token_map,
)
from vit_layers_flax.typing import Array


class T2TViT(ImageClassifier):
    """Tokens-to-Token ViT: ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    Yuan, Chen, Wang, Yu, Shi, Jiang, Tay, Feng, Yan, "Tokens-to-Token ViT: Training Vision
    Transformers from Scratch on ImageNet", ICCV 2021 (arXiv:2101.11986). ``t2t_layers``
    lists the ``(kernel_size, stride)`` of the soft splits (:class:`~t2t_vit_flax.TokensToToken`);
    a class token and a position embedding are added, then ``transformer`` (default: the
    shared :class:`~vit_layers_flax.Transformer` of ``depth`` blocks; or any module called as
    ``transformer(x, train=train)``), and the head reads the class token (``pool='cls'``) or
    the mean of all tokens (``'mean'``). Square images. ``dropout`` acts in every transformer,
    ``remat``/``scan``/``attention_implementation`` in the default one. Feature maps: the
    patch grid after each block (after the custom transformer if it is no ``Transformer``).
    """

    image_size: int
    num_classes: int
    dim: int
    depth: int | None = None
    heads: int | None = None
    mlp_dim: int | None = None
    pool: str = "cls"
    channels: int = 3
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    transformer: nn.Module | None = None
    t2t_layers: Sequence[tuple[int, int]] = ((7, 4), (3, 2), (3, 2))
    attention_implementation: str | None = None

    @property
    def output_image_size(self) -> int:
        """The side of the token grid after the last soft split."""
        size = self.image_size
        for kernel_size, stride in self.t2t_layers:
            size = conv_output_size(size, kernel_size, stride, stride // 2)
        return size

    def __post_init__(self):
        check_config(
            isinstance(self.image_size, int) and self.image_size > 0,
            f"T2TViT: image_size must be a positive int (square images), received {self.image_size!r}",
        )
        check_config(
            self.pool in ("cls", "mean"), f"T2TViT: pool must be 'cls' or 'mean', received {self.pool!r}"
        )
        check_config(
            len(self.t2t_layers) > 0, "T2TViT: t2t_layers must hold at least one (kernel_size, stride)"
        )
        check_config(
            all(len(layer) == 2 and min(layer) > 0 for layer in self.t2t_layers),
            f"T2TViT: t2t_layers must be positive (kernel_size, stride) pairs, received {self.t2t_layers!r}",
        )
        check_config(
            isinstance(self.image_size, int) and self.output_image_size > 0,
            f"T2TViT: image_size {self.image_size} is too small for t2t_layers {self.t2t_layers!r}",
        )
        check_config(min(self.dim, self.dim_head, self.channels) > 0, "T2TViT: sizes must be positive")
        check_config(self.num_classes >= 0, f"T2TViT: num_classes must be >= 0, received {self.num_classes}")
        if self.transformer is None:
            check_config(
                None not in (self.depth, self.heads, self.mlp_dim),
                "T2TViT: depth, heads, and mlp_dim must be supplied (or a transformer)",
            )
            check_config(min(self.depth, self.heads, self.mlp_dim) > 0, "T2TViT: sizes must be positive")
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        return InputSizes(self.image_size)

    @property
    def num_features(self) -> int:
        return self.dim

    def _blocks(self) -> int | None:
        """The number of blocks of the main transformer (``None``: a custom module without them)."""
        if self.transformer is None:
            return self.depth
        return self.transformer.depth if isinstance(self.transformer, Transformer) else None

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        grid = (self.output_image_size, self.output_image_size)
        reduction = grid_reduction(self.image_size, grid)
        if (depth := self._blocks()) is None:
            return (FeatureInfo(self.dim, reduction, "transformer"),)
        return tuple(FeatureInfo(self.dim, reduction, f"transformer/layers_{i}") for i in range(depth))

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        size = (self.image_size, self.image_size)
        check_images(img, channels=self.channels, image_size=size, name="T2TViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = TokensToToken(
            self.dim, tuple(self.t2t_layers), self.channels, self.dropout, name="to_patch_embedding", **dtypes
        )(img, train=train)
        x = TokenEmbedding(1, self.emb_dropout, param_dtype=self.param_dtype, name="embedding")(
            x, train=train
        )
        if self.transformer is not None:
            transformer = self.transformer
        else:
            block = functools.partial(
                TransformerBlock,
                self.dim,
                self.heads,
                self.dim_head,
                self.mlp_dim,
                dropout=self.dropout,
                attention=functools.partial(Attention, implementation=self.attention_implementation),
                **dtypes,
            )
            transformer = Transformer(
                self.depth, block, remat=self.remat, scan=self.scan, name="transformer", **dtypes
            )
        if return_features:
            grid = (self.output_image_size, self.output_image_size)
            if self._blocks() is None:
                blocks = (transformer(x, train=train),)
            else:
                _, blocks = transformer(x, train=train, return_features=True)
            return self.select_features([token_map(b, grid, 1) for b in blocks])
        x = transformer(x, train=train)
        return self.classify(pool_tokens(x, self.pool), pre_logits=pre_logits, name="mlp_head")
