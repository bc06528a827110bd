"""LeViT: "a Vision Transformer in ConvNet's Clothing for Faster Inference", after vit-pytorch's ``levit.py``."""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from levit_flax.attention import ACTIVATIONS
from levit_flax.conv_norm import ConvNorm
from levit_flax.stage import BLOCK_OPTIONS, Stage
from vit_layers_flax import (
    BatchNorm,
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

#: the convolutional stem: four 3x3 convolutions of stride 2 (no activation between them in
#: vit-pytorch's), the first three of these widths (vit-pytorch's; timm's: the first stage's
#: width over 8, 4 and 2), the last of the first stage's
STEM_WIDTHS = (32, 64, 128)
STEM_STRIDE = 2**4
#: the default input channels
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
    map side, blocks and heads, the width its downsampling block widens the map to (``None``
    for the last stage, which has none) and that block's heads (``None``: twice the stage's,
    vit-pytorch's; set by ``LeViT.downsample_heads``)."""

    dim: int
    fmap_size: int
    depth: int
    heads: int
    dim_out: int | None
    downsample_heads: int | None = None


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

    The defaults are vit-pytorch's architecture; these options give timm's ``Levit`` (the
    original LeViT's, :data:`levit_flax.TIMM_ARCHITECTURE`): ``channels`` (input channels, 3);
    ``stem_widths`` (the first three stem convolutions' widths, ``(32, 64, 128)``);
    ``stem_norm`` (``False``; ``True``: bias-free stem convolutions each followed by a
    BatchNorm, Hardswish between them, ``conv_embedding_{i}/conv`` and ``/norm``);
    ``bias_over_scale`` (``True``: the attention bias is divided by the logits' scale
    ``dim_key ** -0.5``, vit-pytorch's; ``False``: added as it is); ``attention_activation``
    (``"gelu"``, or ``"hard_swish"``: before the attention's output projection);
    ``attention_out_bias`` (``True``: that projection's convolution has a bias);
    ``mlp_norm`` (``False``; ``True``: the feed-forward's convolutions are bias-free, each
    followed by a BatchNorm); ``downsample_heads`` (``None``: twice each stage's heads; an
    int or per-stage values, the last stage's unused) and ``downsample_dim_value`` (``None``:
    ``dim_value``) for the downsampling blocks; ``drop_path`` (0: stochastic depth on every
    residual branch in training, one rate for all blocks as timm's ``drop_path_rate``);
    ``head_norm`` (``False``; ``True``: a BatchNorm on the pooled features before each head,
    ``mlp_head_norm`` and ``distill_head_norm``, timm's ``NormLinear``); ``distilled``
    (``False``; ``True``: a second head ``distill_head`` of ``num_classes``, the logits the mean
    of both heads', timm's ``LevitDistilled``; ``num_distill_classes`` instead returns both,
    vit-pytorch's).
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
    channels: int = CHANNELS
    stem_widths: tuple[int, ...] = STEM_WIDTHS
    stem_norm: bool = False
    bias_over_scale: bool = True
    attention_activation: str = "gelu"
    attention_out_bias: bool = True
    mlp_norm: bool = False
    downsample_heads: int | tuple[int, ...] | None = None
    downsample_dim_value: int | None = None
    drop_path: float = 0.0
    head_norm: bool = False
    distilled: bool = False

    def __post_init__(self):
        check_config(
            isinstance(self.stages, int) and self.stages > 0,
            f"LeViT: stages must be a positive int, received {self.stages!r}",
        )
        for name in ("dim", "depth", "heads", "downsample_heads"):
            value = getattr(self, name)
            if value is None:  # downsample_heads: twice each stage's heads
                continue
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
        check_config(
            0.0 <= self.drop_path < 1.0, f"LeViT: drop_path must be in [0, 1), received {self.drop_path}"
        )
        check_config(
            isinstance(self.channels, int) and self.channels > 0,
            f"LeViT: channels must be a positive int, received {self.channels!r}",
        )
        check_config(
            isinstance(self.stem_widths, tuple)
            and len(self.stem_widths) == len(STEM_WIDTHS)
            and all(isinstance(w, int) and w > 0 for w in self.stem_widths),
            f"LeViT: stem_widths must be {len(STEM_WIDTHS)} positive ints (the stem's first convolutions), "
            f"received {self.stem_widths!r}",
        )
        check_config(
            self.attention_activation in ACTIVATIONS,
            f"LeViT: attention_activation must be one of {sorted(ACTIVATIONS)}, "
            f"received {self.attention_activation!r}",
        )
        check_config(
            self.downsample_dim_value is None
            or (isinstance(self.downsample_dim_value, int) and self.downsample_dim_value > 0),
            f"LeViT: downsample_dim_value must be None or a positive int, received {self.downsample_dim_value!r}",
        )
        check_config(
            not (self.distilled and self.num_distill_classes is not None),
            "LeViT: distilled (timm's distillation head of num_classes, averaged with the head) and "
            "num_distill_classes (vit-pytorch's, returned beside the logits) exclude each other, "
            f"received distilled=True, num_distill_classes={self.num_distill_classes}",
        )
        super().__post_init__()

    @property
    def stage_layout(self) -> tuple[StageLayout, ...]:
        """The stages in order: per-stage values padded to ``stages``, the map side halved
        (rounding up) by each downsampling block, which widens to the next stage's ``dim``."""
        dims, depths, heads = (per_stage(v, self.stages) for v in (self.dim, self.depth, self.heads))
        down_heads = (None,) * self.stages
        if self.downsample_heads is not None:
            down_heads = per_stage(self.downsample_heads, self.stages)
        fmap_size, layout = self.image_size // STEM_STRIDE, []
        for i in range(self.stages):
            last = i == self.stages - 1
            dim_out = None if last else dims[i + 1]
            layout.append(
                StageLayout(dims[i], fmap_size, depths[i], heads[i], dim_out, None if last else down_heads[i])
            )
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
        check_images(img, channels=self.channels, image_size=size, name="LeViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        layout = self.stage_layout

        x = img
        for i, width in enumerate((*self.stem_widths, layout[0].dim)):
            name = f"conv_embedding_{i}"
            if not self.stem_norm:
                x = Conv(width, 3, strides=2, padding=1, name=name, **dtypes)(x)
                continue
            if i:
                x = nn.hard_swish(x)
            x = ConvNorm(width, strides=2, kernel_size=3, padding=1, name=name, **dtypes)(x, train=train)

        features = []
        for i, stage in enumerate(layout):
            x = Stage(
                **stage._asdict(),
                dim_key=self.dim_key,
                dim_value=self.dim_value,
                mlp_mult=self.mlp_mult,
                dropout=self.dropout,
                downsample_dim_value=self.downsample_dim_value,
                **{name: getattr(self, name) for name in BLOCK_OPTIONS},
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
        if pre_logits or not self.num_classes:
            return x  # the pooled features the heads read

        def head(name: str, classes: int) -> Array:
            y = BatchNorm(name=f"{name}_norm", **dtypes)(x, train=train) if self.head_norm else x
            return Dense(classes, name=name, **dtypes)(y)

        out = head("mlp_head", self.num_classes)
        if self.distilled:
            return (out + head("distill_head", self.num_classes)) / 2
        if self.num_distill_classes is None:
            return out
        return out, head("distill_head", self.num_distill_classes)
