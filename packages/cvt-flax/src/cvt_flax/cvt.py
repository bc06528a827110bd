"""CvT, after vit-pytorch's ``cvt.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn

from cvt_flax.attention import ConvAttention
from vit_layers_flax import (
    Conv,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    LayerNorm,
    Model,
    Transformer,
    TransformerBlock,
    check_config,
    check_images,
)
from vit_layers_flax.typing import Array

#: the reference's attention always has 64 channels per head (its ``Transformer`` does not pass ``dim_head``).
DIM_HEAD = 64

STAGE_FIELDS = (
    "emb_dim",
    "emb_kernel",
    "emb_stride",
    "proj_kernel",
    "kv_proj_stride",
    "heads",
    "depth",
    "mlp_mult",
)


class Stage(Model):
    """One CvT stage: ``(batch, H, W, C) -> (batch, H', W', emb_dim)``.

    The convolutional token embedding (``conv``, the reference's ``layers.{s}.0``: kernel
    ``emb_kernel``, stride ``emb_stride``, padding ``emb_kernel // 2``), a LayerNorm over the
    channels (``norm``, ``.1``) and ``depth`` blocks built by ``block`` (``transformer``,
    ``.2``, without final norm).
    """

    emb_dim: int
    emb_kernel: int
    emb_stride: int
    depth: int
    block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = Conv(
            self.emb_dim, self.emb_kernel, self.emb_stride, self.emb_kernel // 2, name="conv", **dtypes
        )
        x = LayerNorm(name="norm", **dtypes)(conv(x))
        transformer = Transformer(
            self.depth,
            self.block,
            final_norm=False,
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )
        return transformer(x, train=train)


class CvT(ImageClassifier):
    """Convolutional vision Transformer (Wu et al., 2021, arXiv:2103.15808, ICCV 2021).

    Images of any height and width: three :class:`Stage` s (``stages_{s}``) of convolutional
    token embedding and :class:`~cvt_flax.attention.ConvAttention` blocks, the last map
    averaged over space and classified by ``to_logits``. Feature maps: each stage's output.
    For each stage ``s1`` to ``s3``: ``emb_dim``, ``emb_kernel`` and ``emb_stride`` of the
    token embedding, ``proj_kernel`` (odd) and ``kv_proj_stride`` of the attention's
    projections, ``heads`` (of 64 channels), ``depth`` and ``mlp_mult``. ``dropout`` acts on
    the attention weights and after every projection.
    """

    num_classes: int
    s1_emb_dim: int = 64
    s1_emb_kernel: int = 7
    s1_emb_stride: int = 4
    s1_proj_kernel: int = 3
    s1_kv_proj_stride: int = 2
    s1_heads: int = 1
    s1_depth: int = 1
    s1_mlp_mult: int = 4
    s2_emb_dim: int = 192
    s2_emb_kernel: int = 3
    s2_emb_stride: int = 2
    s2_proj_kernel: int = 3
    s2_kv_proj_stride: int = 2
    s2_heads: int = 3
    s2_depth: int = 2
    s2_mlp_mult: int = 4
    s3_emb_dim: int = 384
    s3_emb_kernel: int = 3
    s3_emb_stride: int = 2
    s3_proj_kernel: int = 3
    s3_kv_proj_stride: int = 2
    s3_heads: int = 6
    s3_depth: int = 10
    s3_mlp_mult: int = 4
    dropout: float = 0.0
    channels: int = 3
    attention_implementation: str | None = None

    def stage_config(self, stage: int) -> dict[str, int]:
        """The ``s{stage}_*`` attributes (``stage`` 1, 2 or 3) without their prefix."""
        return {name: getattr(self, f"s{stage}_{name}") for name in STAGE_FIELDS}

    def input_sizes(self) -> InputSizes:
        """Every height and width: the model is fully convolutional."""
        return InputSizes(1, 1)

    def __post_init__(self):
        check_config(
            self.num_classes >= 0, f"CvT: num_classes must be non-negative, received {self.num_classes}"
        )
        check_config(self.channels > 0, f"CvT: channels must be positive, received {self.channels}")
        check_config(0.0 <= self.dropout < 1.0, f"CvT: dropout must be in [0, 1), received {self.dropout}")
        for stage in (1, 2, 3):
            config = self.stage_config(stage)
            bad = {k: v for k, v in config.items() if not (v >= 0 if k == "depth" else v > 0)}
            check_config(
                not bad,
                f"CvT: stage s{stage} sizes must be positive (depth non-negative), received "
                + ", ".join(f"s{stage}_{k}={v}" for k, v in bad.items()),
            )
            check_config(
                config["proj_kernel"] % 2 == 1,
                f"CvT: s{stage}_proj_kernel must be odd (with padding proj_kernel // 2 the query map keeps "
                f"the input's size), received {config['proj_kernel']}",
            )
        super().__post_init__()

    @property
    def num_features(self) -> int:
        return self.s3_emb_dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Each stage's map; its reduction is the product of the embedding strides so far (an
        even ``emb_kernel`` pads the map one pixel larger than ``ceil(side / stride)``)."""
        maps, reduction = [], 1
        for stage in (1, 2, 3):
            config = self.stage_config(stage)
            reduction *= config["emb_stride"]
            maps.append(FeatureInfo(config["emb_dim"], (reduction, reduction), f"stages_{stage - 1}"))
        return tuple(maps)

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        check_images(img, channels=self.channels, name="CvT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, features = img, []
        for stage in (1, 2, 3):
            config = self.stage_config(stage)
            attention = functools.partial(
                ConvAttention,
                proj_kernel=config["proj_kernel"],
                kv_proj_stride=config["kv_proj_stride"],
                implementation=self.attention_implementation,
            )
            block = functools.partial(
                TransformerBlock,
                config["emb_dim"],
                config["heads"],
                DIM_HEAD,
                config["emb_dim"] * config["mlp_mult"],
                dropout=self.dropout,
                attention=attention,
                **dtypes,
            )
            x = Stage(
                config["emb_dim"],
                config["emb_kernel"],
                config["emb_stride"],
                config["depth"],
                block,
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
