"""LeViT: "a Vision Transformer in ConvNet's Clothing for Faster Inference" (Graham et al., 2021),
after vit-pytorch's ``levit.py``."""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from levit_flax.transformer import Transformer
from vit_layers_flax import Conv, check_config, check_images
from vit_layers_flax.typing import Array, Dtype

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


class BackboneStage(NamedTuple):
    """Constructor keywords of one :class:`~levit_flax.Transformer` of the backbone."""

    dim: int
    fmap_size: int
    depth: int
    heads: int
    mlp_mult: int
    dropout: float
    dim_out: int
    downsample: bool


class LeViT(nn.Module):
    """LeViT: a convolutional stem, then stages of attention blocks on shrinking feature maps.

    ``(batch, image_size, image_size, 3) -> (batch, num_classes)``, or with
    ``num_distill_classes`` the pair ``((batch, num_classes), (batch, num_distill_classes))``
    (class head, distillation head), as the reference returns them.

    The stem (``conv_embedding_0`` .. ``_3``: 3x3 convolutions of stride 2 to 32, 64, 128,
    ``dim[0]`` channels) maps the image to an ``image_size / 16`` square map. Each of the
    ``stages`` runs ``depth`` blocks of :class:`~levit_flax.Attention` (with a learned
    attention bias) and a convolutional feed-forward, keeping the map's size; between
    stages a shrinking block (one block, ``2 * heads`` heads, strided queries, no attention
    residual, ``mlp_mult=2`` and no dropout whatever the model's, as the reference) halves
    the map (rounding up) and widens it to the next stage's ``dim``. The map is averaged
    and read by ``mlp_head`` (and ``distill_head``), plain linear layers.

    Attributes follow vit-pytorch's ``LeViT``. ``dim``, ``depth`` and ``heads`` take an int
    or a per-stage tuple (a shorter tuple is padded with its last value).
    ``image_size`` must be a multiple of 16; inputs must be ``image_size × image_size``
    with 3 channels. ``dropout`` acts on attention weights, attention outputs and in the
    feed-forward, only when ``train=True`` (rng stream ``'dropout'``). ``train=True`` also
    normalises with batch statistics and, with ``mutable=['batch_stats']``, updates the
    running ones. ``remat`` rematerialises each block in the backward pass (less memory,
    same results). ``dtype`` is the computation dtype, ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
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
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

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
            min(self.num_classes, self.mlp_mult, self.dim_key, self.dim_value) > 0,
            "LeViT: num_classes, mlp_mult, dim_key and dim_value must be positive",
        )
        check_config(
            self.num_distill_classes is None or self.num_distill_classes > 0,
            f"LeViT: num_distill_classes must be None or positive, received {self.num_distill_classes!r}",
        )
        check_config(0.0 <= self.dropout < 1.0, f"LeViT: dropout must be in [0, 1), received {self.dropout}")
        super().__post_init__()

    @property
    def backbone_stages(self) -> tuple[BackboneStage, ...]:
        """The backbone's transformers in order (``backbone_0``, ``backbone_1``, ...): each
        stage, then (except after the last) its shrinking block, as the reference builds them."""
        dims, depths, heads = (per_stage(v, self.stages) for v in (self.dim, self.depth, self.heads))
        fmap_size = self.image_size // STEM_STRIDE
        layout = []
        for i in range(self.stages):
            stage = dict(dim=dims[i], fmap_size=fmap_size, heads=heads[i])
            layout.append(
                BackboneStage(
                    **stage,
                    depth=depths[i],
                    mlp_mult=self.mlp_mult,
                    dropout=self.dropout,
                    dim_out=dims[i],
                    downsample=False,
                )
            )
            if i < self.stages - 1:  # the reference's defaults: mlp_mult=2, dropout=0
                shrink = dict(stage, heads=2 * heads[i])
                layout.append(
                    BackboneStage(
                        **shrink, depth=1, mlp_mult=2, dropout=0.0, dim_out=dims[i + 1], downsample=True
                    )
                )
                fmap_size = ceil(fmap_size / 2)
        return tuple(layout)

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Any:
        size = (self.image_size, self.image_size)
        check_images(img, channels=CHANNELS, image_size=size, name="LeViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        stages = self.backbone_stages

        x = img
        for i, width in enumerate((*STEM_WIDTHS, stages[0].dim)):
            conv = Conv(width, (3, 3), stride=(2, 2), padding=(1, 1), name=f"conv_embedding_{i}", **dtypes)
            x = conv(x)

        for i, stage in enumerate(stages):
            transformer = Transformer(
                stage.dim,
                stage.fmap_size,
                stage.depth,
                stage.heads,
                self.dim_key,
                self.dim_value,
                mlp_mult=stage.mlp_mult,
                dropout=stage.dropout,
                dim_out=stage.dim_out,
                downsample=stage.downsample,
                remat=self.remat,
                scan=self.scan,
                name=f"backbone_{i}",
                **dtypes,
            )
            x = transformer(x, train=train)

        x = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1)
        out = nn.Dense(self.num_classes, name="mlp_head", **dtypes)(x)
        if self.num_distill_classes is None:
            return out
        return out, nn.Dense(self.num_distill_classes, name="distill_head", **dtypes)(x)
