"""ScalableViT, after vit-pytorch's ``scalable_vit.py``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from scalablevit_flax.block import ScalableBlock
from vit_layers_flax import (
    ClassifierHead,
    Conv,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    LayerNorm,
    Model,
    apply_blocks,
    check_config,
    check_images,
    check_stage_size,
    conv_output_size,
)
from vit_layers_flax.typing import Array

#: the hyperparameters given per stage (an int for every stage, or a tuple with one per stage)
STAGE_FIELDS = (
    "heads",
    "ssa_dim_key",
    "ssa_dim_value",
    "reduction_factor",
    "iwsa_dim_key",
    "iwsa_dim_value",
    "window_size",
)
#: the stem's (kernel, stride, padding), and each downsampling's
STEM = (7, 4, 3)
DOWNSAMPLE = (3, 2, 1)


class Stage(Model):
    """One stage, the reference's ``layers.{s}``: ``(batch, H, W, dim) -> (features, next)``.

    ``depth`` blocks built by ``block`` (``layers_0``, with the PEG, then ``layers_1`` ...,
    or with ``scan`` ``layers``); then, except in the last stage, a LayerNorm (``norm``) and
    the 3 x 3 stride-2 convolution to twice the width (``downsample``). ``features`` is the
    map before the downsampling, ``next`` its downsampled ``(batch, ceil(H / 2), ceil(W / 2),
    2 * dim)`` (``None`` in the last stage).
    """

    depth: int
    block: Callable[..., nn.Module]
    is_last: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, Array | None]:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        blocks = functools.partial(apply_blocks, train=train, remat=self.remat)
        x = blocks(lambda name: self.block(peg=True, name=name), min(self.depth, 1), x)
        x = blocks(lambda name: self.block(name=name), max(self.depth - 1, 0), x, scan=self.scan, start=1)
        if self.is_last:
            return x, None
        x = LayerNorm(name="norm", **dtypes)(x)
        kernel, stride, padding = DOWNSAMPLE
        return x, Conv(2 * x.shape[-1], kernel, stride, padding, name="downsample", **dtypes)(x)


class ScalableViT(ImageClassifier):
    """ScalableViT (Yang et al., 2022, arXiv:2203.10790): a pyramid of SSA and IWSA blocks.

    A 7 x 7 stride-4 convolution (``to_patches``) embeds the image; stage ``s``
    (``stages_{s}``) is ``dim * 2 ** s`` wide with ``depth[s]`` blocks; the head
    (``mlp_head``) normalises and classifies the last map's mean. Feature maps: each stage's
    output before its downsampling. Per stage (one value, or a tuple with one per stage):
    ``heads``, the SSA's ``reduction_factor`` and ``ssa_dim_key`` / ``ssa_dim_value``, the
    IWSA's ``window_size`` (``None``: the whole map) and ``iwsa_dim_key`` /
    ``iwsa_dim_value``; ``ff_expansion_factor`` for all.
    """

    num_classes: int
    dim: int
    depth: tuple[int, ...]
    heads: int | tuple[int, ...]
    reduction_factor: int | tuple[int, ...]
    window_size: int | tuple[int | None, ...] | None = None
    iwsa_dim_key: int | tuple[int, ...] = 32
    iwsa_dim_value: int | tuple[int, ...] = 32
    ssa_dim_key: int | tuple[int, ...] = 32
    ssa_dim_value: int | tuple[int, ...] = 32
    ff_expansion_factor: int = 4
    channels: int = 3
    dropout: float = 0.0
    attention_implementation: str | None = None

    @property
    def num_stages(self) -> int:
        return len(self.depth)

    def stage_configs(self) -> list[dict[str, Any]]:
        """One dict per stage: ``dim``, ``depth`` and the :data:`STAGE_FIELDS`, tuples broadcast."""
        per_stage = {
            name: (value if isinstance(value, (tuple, list)) else (value,) * self.num_stages)
            for name in STAGE_FIELDS
            for value in [getattr(self, name)]
        }
        return [
            {"dim": self.dim * 2**s, "depth": self.depth[s], **{k: v[s] for k, v in per_stage.items()}}
            for s in range(self.num_stages)
        ]

    def feature_map_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(H_s, W_s)`` of each stage's feature map for ``height x width`` images: the stride-4
        stem gives ``ceil(n / 4)``, each downsampling ``ceil(n / 2)``."""
        sizes = [(conv_output_size(height, *STEM), conv_output_size(width, *STEM))]
        for _ in range(self.num_stages - 1):
            sizes.append(tuple(conv_output_size(n, *DOWNSAMPLE) for n in sizes[-1]))
        return sizes

    def _stage_tiles(self) -> list[dict[str, int]]:
        """Per stage, the tiles its map must split into, by what they are (none without blocks)."""
        tiles = []
        for config in self.stage_configs():
            own = {}
            if config["depth"]:
                own["SSA key / value reduction (reduction_factor)"] = config["reduction_factor"]
                if config["window_size"] is not None:
                    own["IWSA window (window_size)"] = config["window_size"]
            tiles.append(own)
        return tiles

    def input_sizes(self) -> InputSizes:
        """The multiples of ``step``: the sides whose every stage map splits exactly into its
        windows and key / value reduction. The stem and the downsamplings round up, so some
        sides just below a multiple are accepted too (:meth:`feature_map_sizes` decides)."""
        tiles = (
            STEM[1] * DOWNSAMPLE[1] ** s * tile
            for s, own in enumerate(self._stage_tiles())
            for tile in own.values()
            if tile > 1
        )
        step = math.lcm(1, *tiles)
        return InputSizes(step, step)

    def __post_init__(self):
        name = "ScalableViT"
        check_config(
            isinstance(self.depth, (tuple, list)) and len(self.depth) > 0,
            f"{name}: depth must be a tuple with the number of blocks of each stage, received {self.depth!r}",
        )
        check_config(
            all(isinstance(d, int) and d >= 0 for d in self.depth),
            f"{name}: depth entries must be non-negative ints, received {self.depth!r}",
        )
        check_config(
            self.num_classes >= 0, f"{name}: num_classes must be non-negative, received {self.num_classes}"
        )
        for field, value in (
            ("dim", self.dim),
            ("ff_expansion_factor", self.ff_expansion_factor),
            ("channels", self.channels),
        ):
            check_config(value > 0, f"{name}: {field} must be positive, received {value}")
        check_config(0.0 <= self.dropout < 1.0, f"{name}: dropout must be in [0, 1), received {self.dropout}")
        for field in STAGE_FIELDS:
            value = getattr(self, field)
            values = value if isinstance(value, (tuple, list)) else (value,)
            check_config(
                not isinstance(value, (tuple, list)) or len(value) == self.num_stages,
                f"{name}: {field} must be one value or a tuple of {self.num_stages} (one per stage, as "
                f"depth), received {value!r}",
            )
            allowed = (lambda v: v is None or v > 0) if field == "window_size" else (lambda v: v > 0)
            check_config(
                all(allowed(v) for v in values),
                f"{name}: {field} must be positive{' or None' if field == 'window_size' else ''}, "
                f"received {value!r}",
            )
        super().__post_init__()

    def _check_stage_sizes(self, img: Array) -> None:
        """Raise a ``ValueError`` naming the stage whose map does not split into its key / value
        reduction or its IWSA windows."""
        sizes = self.feature_map_sizes(*img.shape[1:3])
        for stage, (size, tiles) in enumerate(zip(sizes, self._stage_tiles(), strict=True), start=1):
            for what, tile in tiles.items():
                check_stage_size(img, stage=stage, size=size, window=tile, what=what, name="ScalableViT")

    @property
    def num_features(self) -> int:
        return self.dim * 2 ** (self.num_stages - 1)

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Each stage's map: ``dim * 2 ** s`` channels, reduced 4 by the stem, 2 per downsampling."""
        return tuple(
            FeatureInfo(self.dim * 2**s, (STEM[1] * DOWNSAMPLE[1] ** s,) * 2, f"stages_{s}")
            for s in range(self.num_stages)
        )

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        check_images(img, channels=self.channels, name="ScalableViT")
        self._check_stage_sizes(img)
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(self.dim, *STEM, name="to_patches", **dtypes)(img)
        features = []
        for s, config in enumerate(self.stage_configs()):
            block = functools.partial(
                ScalableBlock,
                config["dim"],
                config["heads"],
                ff_expansion_factor=self.ff_expansion_factor,
                dropout=self.dropout,
                ssa_dim_key=config["ssa_dim_key"],
                ssa_dim_value=config["ssa_dim_value"],
                ssa_reduction_factor=config["reduction_factor"],
                iwsa_dim_key=config["iwsa_dim_key"],
                iwsa_dim_value=config["iwsa_dim_value"],
                iwsa_window_size=config["window_size"],
                attention_implementation=self.attention_implementation,
                **dtypes,
            )
            stage = Stage(
                config["depth"],
                block,
                is_last=s == self.num_stages - 1,
                remat=self.remat,
                scan=self.scan,
                name=f"stages_{s}",
                **dtypes,
            )
            feature, x = stage(x, train=train)
            features.append(feature)
        if return_features:
            return self.select_features(features)
        x = features[-1].mean(axis=(1, 2))  # Reduce('b d h w -> b d', 'mean')
        return ClassifierHead(self.num_classes, name="mlp_head", **dtypes)(x, pre_logits=pre_logits)
