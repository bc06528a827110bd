"""LeViT: "a Vision Transformer in ConvNet's Clothing for Faster Inference", after vit-pytorch's ``levit.py``."""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from levit_flax.stage import Stage
from vit_layers_flax import (
    Conv,
    Dense,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    check_config,
    check_images,
    grid_reduction,
)
from vit_layers_flax.typing import Array

#: the convolutional stem: four 3x3 convolutions of stride 2 (no activation between them)
STEM_WIDTHS = (32, 64, 128)
STEM_STRIDE = 2**4
CHANNELS = 3


def per_stage(value: int | Sequence[int], stages: int) -> tuple[int, ...]:
    """The reference's ``cast_tuple(value, stages)``: an int is repeated; a sequence shorter
    than ``stages`` is padded with its last value. A longer one raises ``ValueError``."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or len(values) > stages:
        raise ValueError(f"LeViT: expected at most {stages} per-stage values, received {value!r}")
    return values + values[-1:] * (stages - len(values))


class StageLayout(NamedTuple):
    """One stage of a :class:`LeViT` (``stages_{i}``, a :class:`~levit_flax.Stage`): its width,
    map side, blocks and heads, and the width its downsampling block widens the map to
    (``None`` for the last stage, which has none)."""

    dim: int
    fmap_size: int
    depth: int
    heads: int
    dim_out: int | None


class LeViT(ImageClassifier):
    """LeViT (Graham et al., 2021, arXiv:2104.01136): a convolutional stem, then stages of
    attention blocks on feature maps that shrink between stages.

    Logits, or with ``num_distill_classes`` the pair ``(logits, distill_logits)``. The stem
    (``conv_embedding_0`` .. ``_3``: 3x3 convolutions of stride 2) makes an ``image_size / 16``
    map; ``stages_{i}`` follow (:attr:`stage_layout`); the averaged map is read by the Dense
    heads ``mlp_head`` (and ``distill_head``; ``num_classes=0`` drops both). Feature maps:
    each stage's map after its blocks, before its downsampling block. ``dim``, ``depth`` and
    ``heads`` take an int or at most ``stages`` values (padded with the last, as the
    reference); ``dim_key``/``dim_value``: per-head widths of queries and keys / values.
    """

    image_size: int
    num_classes: int
    dim: int | tuple[int, ...]
    depth: int | tuple[int, ...]
    heads: int | tuple[int, ...]
    mlp_mult: int
    stages: int = 3
    dim_key: int = 32
    dim_value: int = 64
    dropout: float = 0.0
    num_distill_classes: int | None = None

    def __post_init__(self):
        check_config(
            isinstance(self.stages, int) and self.stages > 0,
            f"LeViT: stages must be a positive int, received {self.stages!r}",
        )
        for name in ("dim", "depth", "heads"):
            value = getattr(self, name)
            values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
            check_config(
                0 < len(values) <= self.stages,
                f"LeViT: {name} must be an int or a tuple of at most stages={self.stages} values, "
                f"received {value!r}",
            )
            check_config(
                all(isinstance(v, int) and v > 0 for v in values),
                f"LeViT: {name} must be positive ints, received {value!r}",
            )
        check_config(
            isinstance(self.image_size, int) and self.image_size > 0 and self.image_size % STEM_STRIDE == 0,
            f"LeViT: image_size must be a positive multiple of {STEM_STRIDE} (the stem's stride), "
            f"received {self.image_size!r}",
        )
        check_config(
            min(self.mlp_mult, self.dim_key, self.dim_value) > 0,
            "LeViT: mlp_mult, dim_key and dim_value must be positive",
        )
        check_config(
            isinstance(self.num_classes, int) and self.num_classes >= 0,
            f"LeViT: num_classes must be a non-negative int, received {self.num_classes!r}",
        )
        check_config(
            self.num_distill_classes is None or self.num_distill_classes > 0,
            f"LeViT: num_distill_classes must be None or positive, received {self.num_distill_classes!r}",
        )
        check_config(0.0 <= self.dropout < 1.0, f"LeViT: dropout must be in [0, 1), received {self.dropout}")
        super().__post_init__()

    @property
    def stage_layout(self) -> tuple[StageLayout, ...]:
        """The stages in order: per-stage values padded to ``stages``, the map side halved
        (rounding up) by each downsampling block, which widens to the next stage's ``dim``."""
        dims, depths, heads = (per_stage(v, self.stages) for v in (self.dim, self.depth, self.heads))
        fmap_size, layout = self.image_size // STEM_STRIDE, []
        for i in range(self.stages):
            dim_out = dims[i + 1] if i < self.stages - 1 else None
            layout.append(StageLayout(dims[i], fmap_size, depths[i], heads[i], dim_out))
            fmap_size = ceil(fmap_size / 2)
        return tuple(layout)

    def input_sizes(self) -> InputSizes:
        return InputSizes(self.image_size)

    @property
    def num_features(self) -> int:
        return self.stage_layout[-1].dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Each stage's map after its blocks (``fmap_size`` square), before its downsampling block."""
        return tuple(
            FeatureInfo(
                stage.dim,
                grid_reduction(self.image_size, (stage.fmap_size, stage.fmap_size)),
                f"stages_{i}/layers_{stage.depth - 1}",
            )
            for i, stage in enumerate(self.stage_layout)
        )

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Any:
        size = (self.image_size, self.image_size)
        check_images(img, channels=CHANNELS, image_size=size, name="LeViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        layout = self.stage_layout

        x = img
        for i, width in enumerate((*STEM_WIDTHS, layout[0].dim)):
            x = Conv(width, 3, strides=2, padding=1, name=f"conv_embedding_{i}", **dtypes)(x)

        features = []
        for i, stage in enumerate(layout):
            x = Stage(
                **stage._asdict(),
                dim_key=self.dim_key,
                dim_value=self.dim_value,
                mlp_mult=self.mlp_mult,
                dropout=self.dropout,
                remat=self.remat,
                scan=self.scan,
                name=f"stages_{i}",
                **dtypes,
            )(x, train=train, return_features=return_features)
            if return_features:
                x, fmap = x
                features.append(fmap)
        if return_features:
            return self.select_features(features)

        x = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1)
        out = self.classify(x, pre_logits=pre_logits, name="mlp_head")
        if pre_logits or not self.num_classes or self.num_distill_classes is None:
            return out  # the pooled features both heads read, or the logits
        return out, Dense(self.num_distill_classes, name="distill_head", **dtypes)(x)
