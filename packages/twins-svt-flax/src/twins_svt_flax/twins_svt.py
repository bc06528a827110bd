"""Twins-SVT, after vit-pytorch's ``twins_svt.py``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn

from twins_svt_flax.block import TwinsBlock
from vit_layers_flax import (
    PEG,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    Model,
    PatchEmbedding,
    Transformer,
    check_config,
    check_images,
    check_stage_size,
)
from vit_layers_flax.typing import Array

#: the reference's ``TwinsSVT`` builds its transformers with their defaults: 8 heads of 64
#: channels and a feed-forward four times the stage width, in every stage.
HEADS = 8
DIM_HEAD = 64
MLP_MULT = 4
#: the reference's first patch embedding takes 3 channels (it has no ``channels`` argument).
CHANNELS = 3

STAGE_FIELDS = ("emb_dim", "patch_size", "local_patch_size", "global_k", "depth")
NUM_STAGES = 4


class Stage(Model):
    """One Twins-SVT stage: ``(batch, H, W, C) -> (batch, H / patch_size, W / patch_size, emb_dim)``.

    The shared :class:`~vit_layers_flax.PatchEmbedding` of ``patch_size`` patches, laid back
    out as a map (``patch_embedding``, the reference's ``layers.{s}.0``), one block
    (``first_transformer``, ``.1``), the positional encoding generator (``peg``, ``.2``), then
    ``depth`` more blocks (``transformer``, ``.3``); ``block`` builds the blocks.
    """

    emb_dim: int
    patch_size: int
    depth: int
    block: Callable[..., nn.Module]
    peg_kernel_size: int = 3

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, height, width, _ = x.shape
        p = self.patch_size
        x = PatchEmbedding(self.emb_dim, (p, p), name="patch_embedding", **dtypes)(x)
        x = x.reshape(batch, height // p, width // p, self.emb_dim)
        stack = functools.partial(
            Transformer, block=self.block, final_norm=False, remat=self.remat, scan=self.scan
        )
        x = stack(1, name="first_transformer", **dtypes)(x, train=train)
        x = PEG(self.peg_kernel_size, name="peg", **dtypes)(x)
        return stack(self.depth, name="transformer", **dtypes)(x, train=train)


class TwinsSVT(ImageClassifier):
    """Twins-SVT (Chu et al., 2021, arXiv:2104.13840, NeurIPS 2021): a four-stage pyramid of
    locally-grouped and global sub-sampled attention.

    Feature maps: each stage's output. For each stage ``s1`` ... ``s4``: the width
    ``emb_dim``, the ``patch_size`` its patch embedding merges, the window
    ``local_patch_size`` of its local attention (unused in stage 4, which has none), the
    sub-sampling stride ``global_k`` of its global attention and ``depth`` (blocks after the
    PEG). ``peg_kernel_size`` is the PEG's kernel; every attention has 8 heads of 64
    channels, as in the reference. The last map's mean is classified by ``to_logits``.
    """

    num_classes: int
    s1_emb_dim: int = 64
    s1_patch_size: int = 4
    s1_local_patch_size: int = 7
    s1_global_k: int = 7
    s1_depth: int = 1
    s2_emb_dim: int = 128
    s2_patch_size: int = 2
    s2_local_patch_size: int = 7
    s2_global_k: int = 7
    s2_depth: int = 1
    s3_emb_dim: int = 256
    s3_patch_size: int = 2
    s3_local_patch_size: int = 7
    s3_global_k: int = 7
    s3_depth: int = 5
    s4_emb_dim: int = 512
    s4_patch_size: int = 2
    s4_local_patch_size: int = 7
    s4_global_k: int = 7
    s4_depth: int = 4
    peg_kernel_size: int = 3
    dropout: float = 0.0
    attention_implementation: str | None = None

    def stage_config(self, stage: int) -> dict[str, int]:
        """The ``s{stage}_*`` attributes (``stage`` 1 to 4) without their prefix."""
        return {name: getattr(self, f"s{stage}_{name}") for name in STAGE_FIELDS}

    def input_sizes(self) -> InputSizes:
        """The multiples of every stage's patch and local window (in pixels of the image), from
        the first at which every stage's map is at least its global sub-sampling stride."""
        step, need, reduction = 1, 1, 1
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            reduction *= config["patch_size"]
            window = config["local_patch_size"] if stage < NUM_STAGES else 1
            step = math.lcm(step, reduction * window)
            need = max(need, reduction * config["global_k"])
        return InputSizes(step * -(-need // step), step)

    def __post_init__(self):
        name = "TwinsSVT"
        check_config(
            self.num_classes >= 0, f"{name}: num_classes must be non-negative, received {self.num_classes}"
        )
        check_config(0.0 <= self.dropout < 1.0, f"{name}: dropout must be in [0, 1), received {self.dropout}")
        check_config(
            self.peg_kernel_size > 0 and self.peg_kernel_size % 2 == 1,
            f"{name}: peg_kernel_size must be positive and odd (with padding kernel // 2 the PEG keeps the "
            f"map's size for its residual), received {self.peg_kernel_size}",
        )
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            if stage == NUM_STAGES:  # the last stage has no local attention: its window is unused
                del config["local_patch_size"]
            bad = {k: v for k, v in config.items() if not (v >= 0 if k == "depth" else v > 0)}
            check_config(
                not bad,
                f"{name}: stage s{stage} sizes must be positive (depth non-negative), received "
                + ", ".join(f"s{stage}_{k}={v}" for k, v in bad.items()),
            )
        super().__post_init__()

    def _check_stage_sizes(self, img: Array) -> None:
        """Every stage's constraints on its feature map, at trace time, before any partitioning."""
        height, width = img.shape[1:3]
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            check = functools.partial(check_stage_size, img, stage=stage, name="TwinsSVT")
            check(size=(height, width), window=config["patch_size"], what="patch size")
            height, width = height // config["patch_size"], width // config["patch_size"]
            if stage < NUM_STAGES:
                check(size=(height, width), window=config["local_patch_size"], what="local window")
            k = config["global_k"]
            if height < k or width < k:
                # the stride-k key / value convolution floors a size that k does not divide, as
                # torch's does; it only needs one whole k x k patch
                smallest = self.input_sizes().smallest
                raise ValueError(
                    f"TwinsSVT: images of shape {tuple(img.shape)} give stage {stage} a {height}x{width} feature "
                    f"map, but its global sub-sampling stride is {k}x{k}: expected a feature map of at least "
                    f"{k}x{k} (the smallest square image this model takes is {smallest}x{smallest})"
                )

    @property
    def num_features(self) -> int:
        return self.s4_emb_dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Each stage's map: ``s*_emb_dim`` channels, the product of the patch sizes so far."""
        maps, reduction = [], 1
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            reduction *= config["patch_size"]
            maps.append(FeatureInfo(config["emb_dim"], (reduction, reduction), f"stages_{stage - 1}"))
        return tuple(maps)

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        check_images(img, channels=CHANNELS, name="TwinsSVT")
        self._check_stage_sizes(img)
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, features = img, []
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            block = functools.partial(
                TwinsBlock,
                config["emb_dim"],
                HEADS,
                DIM_HEAD,
                config["emb_dim"] * MLP_MULT,
                dropout=self.dropout,
                window_size=config["local_patch_size"],
                reduction_factor=config["global_k"],
                has_local=stage < NUM_STAGES,
                attention_implementation=self.attention_implementation,
                **dtypes,
            )
            x = Stage(
                config["emb_dim"],
                config["patch_size"],
                config["depth"],
                block,
                peg_kernel_size=self.peg_kernel_size,
                remat=self.remat,
                scan=self.scan,
                name=f"stages_{stage - 1}",
                **dtypes,
            )(x, train=train)
            features.append(x)
        if return_features:
            return self.select_features(features)
        x = x.mean(axis=(1, 2))  # AdaptiveAvgPool2d(1)
        return self.classify(x, pre_logits=pre_logits, name="to_logits")
