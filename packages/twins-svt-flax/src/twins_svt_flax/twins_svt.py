"""Twins-SVT, after vit-pytorch's ``twins_svt.py``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from twins_svt_flax.block import TwinsBlock
from vit_layers_flax import (
    PEG,
    Dense,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    Layer,
    LayerNorm,
    Model,
    PatchEmbedding,
    Transformer,
    check_config,
    check_images,
    check_stage_size,
    pair,
    patchify,
)
from vit_layers_flax.typing import Array

#: the reference's ``TwinsSVT`` builds its transformers with their defaults: 8 heads of 64
#: channels (the defaults of ``s*_heads`` and ``dim_head``) and a feed-forward four times
#: the stage width, in every stage.
HEADS = 8
DIM_HEAD = 64
MLP_MULT = 4
#: the reference's first patch embedding takes 3 channels (it has no ``channels`` argument;
#: ``channels``' default).
CHANNELS = 3

STAGE_FIELDS = ("emb_dim", "patch_size", "local_patch_size", "global_k", "depth", "heads")
NUM_STAGES = 4


class ConvPatchEmbedding(Layer):
    """timm's patch embedding: ``(batch, H, W, C) -> (batch, (H / p) * (W / p), dim)``, a
    convolution of kernel and stride ``patch_size`` (``proj``, a Dense on the ``(p1 p2 c)``
    patches) and a LayerNorm (``norm``, epsilon 1e-5): the shared
    :class:`~vit_layers_flax.PatchEmbedding` without its LayerNorm on the patches."""

    dim: int
    patch_size: tuple[int, int]

    @nn.compact
    def __call__(self, images: Array) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Dense(self.dim, name="proj", **dtypes)(patchify(images, self.patch_size))
        return LayerNorm(name="norm", **dtypes)(x)


class Stage(Model):
    """One Twins-SVT stage: ``(batch, H, W, C) -> (batch, H / patch_size, W / patch_size, emb_dim)``.

    The shared :class:`~vit_layers_flax.PatchEmbedding` of ``patch_size`` patches, laid back
    out as a map (``patch_embedding``, the reference's ``layers.{s}.0``), one block
    (``first_transformer``, ``.1``), the positional encoding generator (``peg``, ``.2``), then
    ``depth`` more blocks (``transformer``, ``.3``); ``block`` builds the blocks.

    timm's layout: ``patch_norm=False`` embeds patches with :class:`ConvPatchEmbedding` (no
    LayerNorm before the projection); ``peg_in_block`` puts the PEG inside the first block,
    between its local and global halves (``first_transformer/layers_0/peg``), where timm's
    stage applies it (after its first block, the local one).
    """

    emb_dim: int
    patch_size: int
    depth: int
    block: Callable[..., nn.Module]
    peg_kernel_size: int = 3
    patch_norm: bool = True
    peg_in_block: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, height, width, _ = x.shape
        p = self.patch_size
        embedding = PatchEmbedding if self.patch_norm else ConvPatchEmbedding
        x = embedding(self.emb_dim, (p, p), name="patch_embedding", **dtypes)(x)
        x = x.reshape(batch, height // p, width // p, self.emb_dim)
        stack = functools.partial(Transformer, final_norm=False, remat=self.remat, scan=self.scan)
        if self.peg_in_block:
            first_block = functools.partial(self.block, peg_kernel_size=self.peg_kernel_size)
            x = stack(1, first_block, name="first_transformer", **dtypes)(x, train=train)
        else:
            x = stack(1, self.block, name="first_transformer", **dtypes)(x, train=train)
            x = PEG(self.peg_kernel_size, name="peg", **dtypes)(x)
        return stack(self.depth, self.block, name="transformer", **dtypes)(x, train=train)


class TwinsSVT(ImageClassifier):
    """Twins-SVT (Chu et al., 2021, arXiv:2104.13840, NeurIPS 2021): a four-stage pyramid of
    locally-grouped and global sub-sampled attention.

    Feature maps: each stage's output. For each stage ``s1`` ... ``s4``: the width
    ``emb_dim``, the ``patch_size`` its patch embedding merges, the window
    ``local_patch_size`` of its local attention (unused in stage 4, which has none unless
    ``last_stage_local``), the sub-sampling stride ``global_k`` of its global attention,
    ``depth`` (blocks after the PEG) and ``heads`` (of ``dim_head`` channels; 8 of 64, as
    the reference fixes them). ``peg_kernel_size`` is the PEG's kernel. The last map's mean
    is classified by ``to_logits``.

    ``channels`` is the images' (3: the reference's). ``image_size`` (``None``, or an int or
    ``(height, width)``: timm's ``img_size``) is the size the model is built for: it is
    checked against the stages at construction and is the size of ``sample_input``; without
    a position embedding the model takes any size its stages allow, whatever ``image_size``.

    The defaults are vit-pytorch's architecture; timm's (the original Twins-SVT,
    :data:`twins_svt_flax.TIMM_ARCHITECTURE`) differs in: ``patch_norm=False`` (the patch
    embedding is a convolution and a LayerNorm, no LayerNorm before it), ``qkv_bias=True``,
    ``norm_epsilon=1e-6`` (the blocks' LayerNorms and the final one), ``spatial_reduction=True``
    (the global attention's keys and values are a pointwise projection of a strided
    convolution and a LayerNorm, :class:`~twins_svt_flax.GlobalAttention`),
    ``peg_after_local=True`` (each stage's PEG between its first block's local and global
    halves), ``last_stage_local=True`` (stage 4 has local attention too),
    ``pad_windows=True`` (the local attention zero-pads a map its window does not divide)
    and ``final_norm=True`` (a LayerNorm ``norm`` on the last map before the pooling).
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
    s1_heads: int = HEADS
    s2_heads: int = HEADS
    s3_heads: int = HEADS
    s4_heads: int = HEADS
    dim_head: int = DIM_HEAD
    channels: int = CHANNELS
    image_size: int | tuple[int, int] | None = None
    patch_norm: bool = True
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    spatial_reduction: bool = False
    peg_after_local: bool = False
    last_stage_local: bool = False
    pad_windows: bool = False
    final_norm: bool = False

    def stage_config(self, stage: int) -> dict[str, int]:
        """The ``s{stage}_*`` attributes (``stage`` 1 to 4) without their prefix."""
        return {name: getattr(self, f"s{stage}_{name}") for name in STAGE_FIELDS}

    def has_local(self, stage: int) -> bool:
        """Whether stage ``stage`` (1 to 4) has local attention: all but the last, unless
        ``last_stage_local``."""
        return stage < NUM_STAGES or self.last_stage_local

    def input_sizes(self) -> InputSizes:
        """The multiples of every stage's patch and local window (in pixels of the image; not
        the windows with ``pad_windows``), from the first at which every stage's map is at
        least its global sub-sampling stride."""
        step, need, reduction = 1, 1, 1
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            reduction *= config["patch_size"]
            window = config["local_patch_size"] if self.has_local(stage) and not self.pad_windows else 1
            step = math.lcm(step, reduction * window)
            need = max(need, reduction * config["global_k"])
        return InputSizes(step * -(-need // step), step)

    def sample_input(self, batch: int = 1) -> jax.ShapeDtypeStruct:
        """A float32 batch of ``image_size`` images, or of the smallest the model takes."""
        if self.image_size is None:
            return super().sample_input(batch)
        return jax.ShapeDtypeStruct((batch, *pair(self.image_size), self.channels), jnp.float32)

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
        check_config(self.dim_head > 0, f"{name}: dim_head must be positive, received {self.dim_head}")
        check_config(self.channels > 0, f"{name}: channels must be positive, received {self.channels}")
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            if not self.has_local(stage):  # the last stage has no local attention: its window is unused
                del config["local_patch_size"]
            bad = {k: v for k, v in config.items() if not (v >= 0 if k == "depth" else v > 0)}
            check_config(
                not bad,
                f"{name}: stage s{stage} sizes must be positive (depth non-negative), received "
                + ", ".join(f"s{stage}_{k}={v}" for k, v in bad.items()),
            )
        if self.image_size is not None:
            height, width = pair(self.image_size)
            try:
                self._check_stage_sizes(jax.ShapeDtypeStruct((1, height, width, self.channels), jnp.float32))
            except ValueError as error:
                raise ValueError(
                    f"{name}: image_size {self.image_size!r} is not a size this configuration takes "
                    f"(sides {self.input_sizes().smallest}, then every {self.input_sizes().step} more): {error}"
                ) from None
        super().__post_init__()

    def _check_stage_sizes(self, img: Array) -> None:
        """Every stage's constraints on its feature map, at trace time, before any partitioning."""
        height, width = img.shape[1:3]
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            check = functools.partial(check_stage_size, img, stage=stage, name="TwinsSVT")
            check(size=(height, width), window=config["patch_size"], what="patch size")
            height, width = height // config["patch_size"], width // config["patch_size"]
            if self.has_local(stage) and not self.pad_windows:
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
        check_images(img, channels=self.channels, name="TwinsSVT")
        self._check_stage_sizes(img)
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, features = img, []
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            block = functools.partial(
                TwinsBlock,
                config["emb_dim"],
                config["heads"],
                self.dim_head,
                config["emb_dim"] * MLP_MULT,
                dropout=self.dropout,
                window_size=config["local_patch_size"],
                reduction_factor=config["global_k"],
                has_local=self.has_local(stage),
                attention_implementation=self.attention_implementation,
                qkv_bias=self.qkv_bias,
                norm_epsilon=self.norm_epsilon,
                pad_windows=self.pad_windows,
                spatial_reduction=self.spatial_reduction,
                **dtypes,
            )
            x = Stage(
                config["emb_dim"],
                config["patch_size"],
                config["depth"],
                block,
                peg_kernel_size=self.peg_kernel_size,
                patch_norm=self.patch_norm,
                peg_in_block=self.peg_after_local,
                remat=self.remat,
                scan=self.scan,
                name=f"stages_{stage - 1}",
                **dtypes,
            )(x, train=train)
            features.append(x)
        if return_features:
            return self.select_features(features)
        if self.final_norm:
            x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dtypes)(x)
        x = x.mean(axis=(1, 2))  # AdaptiveAvgPool2d(1)
        return self.classify(x, pre_logits=pre_logits, name="to_logits")
