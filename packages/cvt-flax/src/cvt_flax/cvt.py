"""CvT, after vit-pytorch's ``cvt.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

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
    conv_output_size,
    pair,
)
from vit_layers_flax.typing import Array

#: the reference's attention always has 64 channels per head (its ``Transformer`` does not pass ``dim_head``).
DIM_HEAD = 64

STAGE_FIELDS = (
    "emb_dim",
    "emb_kernel",
    "emb_stride",
    "emb_padding",
    "proj_kernel",
    "kv_proj_stride",
    "heads",
    "depth",
    "mlp_mult",
)


class Stage(Model):
    """One CvT stage: ``(batch, H, W, C) -> (batch, H', W', emb_dim)``.

    The convolutional token embedding (``conv``, the reference's ``layers.{s}.0``: kernel
    ``emb_kernel``, stride ``emb_stride``, padding ``emb_padding``, ``None``: ``emb_kernel //
    2``), a LayerNorm over the channels (``norm``, ``.1``) and ``depth`` blocks built by
    ``block`` (``transformer``, ``.2``, without final norm).

    ``class_token=True`` (the original CvT's last stage) prepends a learned token
    (``cls_token``, ``(1, emb_dim)``) to the map's tokens before the blocks, whose attention
    then takes ``(batch, 1 + H' * W', emb_dim)`` tokens; the stage returns ``(map, token)``,
    the token ``(batch, emb_dim)``.
    """

    emb_dim: int
    emb_kernel: int
    emb_stride: int
    depth: int
    block: Callable[..., nn.Module]
    emb_padding: int | None = None
    class_token: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array | tuple[Array, Array]:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        padding = self.emb_kernel // 2 if self.emb_padding is None else self.emb_padding
        conv = Conv(self.emb_dim, self.emb_kernel, self.emb_stride, padding, name="conv", **dtypes)
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
        if not self.class_token:
            return transformer(x, train=train)
        batch, height, width, dim = x.shape
        token = self.param("cls_token", nn.initializers.truncated_normal(0.02), (1, dim), self.param_dtype)
        token = jnp.broadcast_to(token.astype(x.dtype), (batch, 1, dim))
        x = transformer(jnp.concatenate([token, rearrange(x, "b h w c -> b (h w) c")], axis=1), train=train)
        return rearrange(x[:, 1:], "b (h w) c -> b h w c", h=height, w=width), x[:, 0]


class CvT(ImageClassifier):
    """Convolutional vision Transformer (Wu et al., 2021, arXiv:2103.15808, ICCV 2021).

    Images of any height and width: three :class:`Stage` s (``stages_{s}``) of convolutional
    token embedding and :class:`~cvt_flax.attention.ConvAttention` blocks, the last map
    averaged over space and classified by ``to_logits``. Feature maps: each stage's output.
    For each stage ``s1`` to ``s3``: ``emb_dim``, ``emb_kernel``, ``emb_stride`` and
    ``emb_padding`` (``None``: ``emb_kernel // 2``) of the token embedding, ``proj_kernel``
    (odd) and ``kv_proj_stride`` of the attention's projections, ``heads`` (of 64 channels),
    ``depth`` and ``mlp_mult``. ``dropout`` acts on the attention weights and after every
    projection.

    The defaults are vit-pytorch's architecture. The original CvT (Microsoft's; Hugging Face's
    ``CvtForImageClassification``, whose weights :func:`~cvt_flax.from_transformers` reads) is
    ``s1_emb_padding=2, s2_emb_padding=1, s3_emb_padding=1`` and these options:
    ``qkv_bias`` (biases on the pointwise query, key and value projections), ``separate_kv``
    (keys and values from depthwise-separable projections of their own, ``to_k`` and ``to_v``,
    instead of one ``to_kv``), ``full_dim_scale`` (attention logits scaled by the stage width
    ``(heads * 64) ** -0.5`` instead of ``64 ** -0.5``), ``cls_token`` (a learned class token
    in the last stage, ``stages_2/cls_token``, which skips the convolutions of the projections;
    the model classifies it instead of the map's mean) and ``final_norm`` (a LayerNorm ``norm``
    on the class token, or on each of the last map's tokens before their mean).
    ``image_size`` is the size the model is meant for (a preset's: its weights'): it fixes no
    parameter and restricts no input, and is the size of :meth:`sample_input`.
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
    s1_emb_padding: int | None = None
    s2_emb_padding: int | None = None
    s3_emb_padding: int | None = None
    qkv_bias: bool = False
    separate_kv: bool = False
    full_dim_scale: bool = False
    cls_token: bool = False
    final_norm: bool = False
    image_size: int | tuple[int, int] | None = None

    def stage_config(self, stage: int) -> dict[str, int]:
        """The ``s{stage}_*`` attributes (``stage`` 1, 2 or 3) without their prefix; an
        ``emb_padding`` of ``None`` as the ``emb_kernel // 2`` it stands for."""
        config = {name: getattr(self, f"s{stage}_{name}") for name in STAGE_FIELDS}
        if config["emb_padding"] is None:
            config["emb_padding"] = config["emb_kernel"] // 2
        return config

    def map_sides(self, side: int) -> tuple[int, int, int]:
        """The side of each stage's map for an image side ``side`` (torch's convolution
        arithmetic; non-positive where the embeddings leave nothing)."""
        sides = []
        for stage in (1, 2, 3):
            config = self.stage_config(stage)
            side = conv_output_size(side, config["emb_kernel"], config["emb_stride"], config["emb_padding"])
            sides.append(side)
        return tuple(sides)

    def input_sizes(self) -> InputSizes:
        """Every height and width from the smallest whose every stage map is non-empty (1
        with vit-pytorch's ``kernel // 2`` paddings): the model is fully convolutional."""
        side = 1
        while min(self.map_sides(side)) < 1:
            side += 1
        return InputSizes(side, 1)

    def sample_input(self, batch: int = 1) -> jax.ShapeDtypeStruct:
        """A float32 batch of ``image_size`` images, or of the smallest the model takes."""
        if self.image_size is None:
            return super().sample_input(batch)
        return jax.ShapeDtypeStruct((batch, *pair(self.image_size), self.channels), jnp.float32)

    def __post_init__(self):
        check_config(
            self.num_classes >= 0, f"CvT: num_classes must be non-negative, received {self.num_classes}"
        )
        check_config(self.channels > 0, f"CvT: channels must be positive, received {self.channels}")
        check_config(0.0 <= self.dropout < 1.0, f"CvT: dropout must be in [0, 1), received {self.dropout}")
        for stage in (1, 2, 3):
            config = self.stage_config(stage)
            bad = {
                k: getattr(self, f"s{stage}_{k}")
                for k, v in config.items()
                if not (v >= 0 if k in ("depth", "emb_padding") else v > 0)
            }
            check_config(
                not bad,
                f"CvT: stage s{stage} sizes must be positive (depth and emb_padding non-negative), received "
                + ", ".join(f"s{stage}_{k}={v}" for k, v in bad.items()),
            )
            check_config(
                config["proj_kernel"] % 2 == 1,
                f"CvT: s{stage}_proj_kernel must be odd (with padding proj_kernel // 2 the query map keeps "
                f"the input's size), received {config['proj_kernel']}",
            )
        if self.image_size is not None:
            sizes = self.input_sizes()
            check_config(
                all(isinstance(side, int) for side in pair(self.image_size))
                and pair(self.image_size) in sizes,
                f"CvT: image_size must be at least {sizes.smallest} (every stage's map non-empty), "
                f"received {self.image_size}",
            )
        super().__post_init__()

    @property
    def num_features(self) -> int:
        return self.s3_emb_dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Each stage's map; its reduction is the product of the embedding strides so far (an
        even ``emb_kernel`` pads the map one pixel larger than ``ceil(side / stride)``, a
        padding under ``emb_kernel // 2`` may make it smaller)."""
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
        sizes = self.input_sizes()
        if not sizes.accepts(*img.shape[1:3]):
            raise ValueError(
                f"CvT: expected images of at least {sizes.smallest} x {sizes.smallest} pixels (every stage's "
                f"map non-empty), received shape {tuple(img.shape)}"
            )
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, features, token = img, [], None
        grid = tuple(img.shape[1:3])
        for stage in (1, 2, 3):
            config = self.stage_config(stage)
            class_token = self.cls_token and stage == 3
            grid = tuple(
                conv_output_size(side, config["emb_kernel"], config["emb_stride"], config["emb_padding"])
                for side in grid
            )
            attention = functools.partial(
                ConvAttention,
                proj_kernel=config["proj_kernel"],
                kv_proj_stride=config["kv_proj_stride"],
                implementation=self.attention_implementation,
                qkv_bias=self.qkv_bias,
                separate_kv=self.separate_kv,
                full_dim_scale=self.full_dim_scale,
                grid=grid if class_token else None,
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
                emb_padding=config["emb_padding"],
                class_token=class_token,
                remat=self.remat,
                scan=self.scan,
                name=f"stages_{stage - 1}",
                **dtypes,
            )(x, train=train)
            if class_token:
                x, token = x
            features.append(x)
        if return_features:
            return self.select_features(features)
        norm = LayerNorm(name="norm", **dtypes) if self.final_norm else lambda t: t
        if token is not None:
            x = norm(token)
        else:
            x = norm(x).mean(axis=(1, 2))  # AdaptiveAvgPool2d(1), after the norm of each token
        return self.classify(x, pre_logits=pre_logits, name="to_logits")
