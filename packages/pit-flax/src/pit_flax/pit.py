"""PiT, after vit-pytorch's ``pit.py``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn

from pit_flax.pool import Pool
from vit_layers_flax import (
    Attention,
    ClassifierHead,
    Dense,
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
    unfold,
)
from vit_layers_flax.typing import Array


class Stage(NamedTuple):
    """One transformer stage: its token width, number of blocks and heads."""

    dim: int
    depth: int
    heads: int


class PiT(ImageClassifier):
    """Pooling-based Vision Transformer: ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    Heo, Yun, Han, Chun, Choe, Oh, "Rethinking Spatial Dimensions of Vision Transformers",
    ICCV 2021 (arXiv:2103.16302). Overlapping ``patch_size`` patches (stride
    ``patch_size // 2``) are projected to ``dim`` tokens; a class token and a position
    embedding are added. ``depth`` holds the number of blocks of each stage, ``heads`` an
    int or one entry per stage. Between stages a :class:`~pit_flax.Pool` halves the token
    grid (rounding up) and doubles the width, so stage ``i`` (``stages_{i}``, no final
    norm, then ``pools_{i}``) is ``dim * 2**i`` wide; ``dim_head`` and ``mlp_dim`` are
    the same in every stage. The head reads the class token. Feature maps: each stage's
    patch grid after its transformer (class token dropped, before the pool).
    """

    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: Sequence[int]
    heads: int | Sequence[int]
    mlp_dim: int
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    channels: int = 3
    attention_implementation: str | None = None

    @property
    def stages(self) -> list[Stage]:
        """``Stage(dim, depth, heads)`` of each stage, widths doubling after every pool."""
        depth = tuple(self.depth)
        heads = tuple(self.heads) if isinstance(self.heads, (tuple, list)) else (self.heads,) * len(depth)
        return [Stage(self.dim * 2**i, d, h) for i, (d, h) in enumerate(zip(depth, heads, strict=True))]

    @property
    def num_patches(self) -> int:
        """Tokens after the patch embedding: the overlapping patches' grid, squared."""
        return conv_output_size(self.image_size, self.patch_size, self.patch_size // 2) ** 2

    @property
    def grid_sides(self) -> list[int]:
        """The side of each stage's token grid: the patches' grid, then halved (rounding up)."""
        sides = [conv_output_size(self.image_size, self.patch_size, self.patch_size // 2)]
        for _ in self.depth[1:]:
            sides.append(-(-sides[-1] // 2))
        return sides

    @property
    def num_features(self) -> int:
        return self.stages[-1].dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        return tuple(
            FeatureInfo(stage.dim, grid_reduction(self.image_size, (side, side)), f"stages_{i}")
            for i, (stage, side) in enumerate(zip(self.stages, self.grid_sides, strict=True))
        )

    def __post_init__(self):
        check_config(
            isinstance(self.image_size, int) and isinstance(self.patch_size, int),
            f"PiT: image_size and patch_size must be ints (square images), received "
            f"{self.image_size!r} and {self.patch_size!r}",
        )
        check_config(
            self.patch_size >= 2,
            f"PiT: patch_size must be at least 2 (the stride is patch_size // 2), received {self.patch_size}",
        )
        check_config(
            self.image_size % self.patch_size == 0,
            f"PiT: image_size {self.image_size} must be divisible by patch_size {self.patch_size}",
        )
        check_config(
            isinstance(self.depth, (tuple, list)) and len(self.depth) > 0,
            f"PiT: depth must be a tuple with the number of blocks of each stage, received {self.depth!r}",
        )
        check_config(
            not isinstance(self.heads, (tuple, list)) or len(self.heads) == len(self.depth),
            f"PiT: heads must be an int or have one entry per stage ({len(self.depth)}), "
            f"received {self.heads!r}",
        )
        check_config(
            min(*self.depth, *(self.heads if isinstance(self.heads, (tuple, list)) else (self.heads,))) > 0
            and min(self.dim, self.mlp_dim, self.dim_head, self.channels) > 0,
            "PiT: sizes must be positive",
        )
        check_config(self.num_classes >= 0, f"PiT: num_classes must be >= 0, received {self.num_classes}")
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        return InputSizes(self.image_size)

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        size = (self.image_size, self.image_size)
        check_images(img, channels=self.channels, image_size=size, name="PiT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = unfold(img, self.patch_size, self.patch_size // 2)  # (batch, num_patches, c * p * p)
        x = Dense(self.dim, name="to_patch_embedding", **dtypes)(x)
        x = TokenEmbedding(1, self.emb_dropout, param_dtype=self.param_dtype, name="embedding")(
            x, train=train
        )

        attention = functools.partial(Attention, implementation=self.attention_implementation)
        stages, maps = self.stages, []
        for i, (stage, side) in enumerate(zip(stages, self.grid_sides, strict=True)):
            block = functools.partial(
                TransformerBlock,
                stage.dim,
                stage.heads,
                self.dim_head,
                self.mlp_dim,
                dropout=self.dropout,
                attention=attention,
                **dtypes,
            )
            x = Transformer(
                stage.depth,
                block,
                final_norm=False,
                remat=self.remat,
                scan=self.scan,
                name=f"stages_{i}",
                **dtypes,
            )(x, train=train)
            maps.append(token_map(x, (side, side), 1))
            if i < len(stages) - 1:
                x = Pool(stage.dim, name=f"pools_{i}", **dtypes)(x)

        if return_features:
            return self.select_features(maps)
        head = ClassifierHead(self.num_classes, name="mlp_head", **dtypes)
        return head(pool_tokens(x, "cls"), pre_logits=pre_logits)
