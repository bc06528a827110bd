"""ScalableViT: "Rethinking the Context-oriented Generalization of Vision Transformer" (Yang et al., 2022),
after vit-pytorch's ``scalable_vit.py``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scalablevit_flax.transformer import ScalableTransformer
from vit_layers_flax import MlpHead, check_config, check_images, check_stage_size
from vit_layers_flax.typing import Array, Dtype

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


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class Stage(nn.Module):
    """One stage: the stage transformer (``transformer``, the reference's ``layers.{s}.0``), then,
    but for the last stage, the 3 x 3 stride-2 convolution to twice the width (``downsample``,
    ``layers.{s}.1.conv``, padding 1).

    ``(batch, H, W, dim) -> (features, next)``: ``features`` ``(batch, H, W, dim)`` is the
    transformer's output (channel-normalised, except in the last stage), ``next``
    ``(batch, ceil(H / 2), ceil(W / 2), 2 * dim)`` the downsampled map the next stage takes,
    or ``None`` in the last stage.
    """

    dim: int
    depth: int
    heads: int
    ssa_dim_key: int
    ssa_dim_value: int
    reduction_factor: int
    iwsa_dim_key: int
    iwsa_dim_value: int
    window_size: int | None
    is_last: bool
    ff_expansion_factor: int = 4
    dropout: float = 0.0
    attention_implementation: str | None = None
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, Array | None]:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features = ScalableTransformer(
            self.dim,
            self.depth,
            heads=self.heads,
            ff_expansion_factor=self.ff_expansion_factor,
            dropout=self.dropout,
            ssa_dim_key=self.ssa_dim_key,
            ssa_dim_value=self.ssa_dim_value,
            ssa_reduction_factor=self.reduction_factor,
            iwsa_dim_key=self.iwsa_dim_key,
            iwsa_dim_value=self.iwsa_dim_value,
            iwsa_window_size=self.window_size,
            norm_output=not self.is_last,
            attention_implementation=self.attention_implementation,
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )(x, train=train)
        if self.is_last:
            return features, None
        downsample = nn.Conv(
            2 * self.dim, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), name="downsample", **dtypes
        )
        return features, downsample(features)


class ScalableViT(nn.Module):
    """Scalable Vision Transformer: a four-stage (by default) pyramid of SSA and IWSA blocks.

    ``(batch, height, width, channels) -> (batch, num_classes)``, or with
    ``return_features=True`` a tuple of one NHWC feature map per stage,
    ``(batch, H_s, W_s, dim * 2 ** s)`` for stage ``s = 0, 1, ...``.

    A 7 x 7 stride-4 convolution (padding 3, ``to_patches``) embeds the image into a
    ``ceil(height / 4) x ceil(width / 4)`` map of ``dim`` channels. Stage ``s``
    (``layers_{s}``, a :class:`Stage`) has width ``dim * 2 ** s`` and runs ``depth[s]``
    blocks, each Scalable Self-Attention (keys and values reduced by ``reduction_factor``)
    -> feed-forward -> PEG (first block only) -> feed-forward -> Interactive Window-based
    Self-Attention (``window_size`` windows, ``None`` for one window over the whole map), in
    that order (see :class:`~scalablevit_flax.transformer.ScalableBlock`); every stage but
    the last ends in a channel LayerNorm and a 3 x 3 stride-2 convolution that halves the
    map (rounding up) and doubles the width. The head averages the last map over space,
    normalises (LayerNorm) and classifies (``mlp_head``).

    Attributes follow vit-pytorch's ``ScalableViT``: ``depth`` is a tuple with one entry per
    stage (its length is the number of stages); ``heads``, ``ssa_dim_key``,
    ``ssa_dim_value``, ``reduction_factor``, ``iwsa_dim_key``, ``iwsa_dim_value`` and
    ``window_size`` are an int (``window_size`` also ``None``) for all stages or a tuple
    with one per stage. ``dropout`` acts on the attention weights and after the attention
    and feed-forward projections, only when ``train=True`` (rng stream ``'dropout'``).
    ``attention_implementation`` is passed to :func:`jax.nn.dot_product_attention`
    (``None``, ``'xla'`` or ``'cudnn'``; attentions whose key and value widths differ use
    explicit float32-softmax weights); ``remat`` rematerialises each block in the backward
    pass (less memory, same results); ``scan`` runs each stage's blocks after the first (the
    first holds the PEG) as one ``nn.scan`` (``layers`` with a leading axis beside
    ``layers_0``): same outputs, a deep stage compiled as two blocks. ``dtype`` is the computation dtype, ``param_dtype``
    the parameters'.

    Images may have any height and width for which, in every stage with blocks, the
    feature map is a multiple of that stage's ``reduction_factor`` and ``window_size``
    (:meth:`feature_map_sizes` gives the stages' sizes); others raise a ``ValueError`` at
    trace time naming the stage and the window or factor.
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
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

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
        embedding gives ``ceil(n / 4)``, each downsampling ``ceil(n / 2)``."""
        size = (_conv_out(height, 7, 4, 3), _conv_out(width, 7, 4, 3))
        sizes = [size]
        for _ in range(self.num_stages - 1):
            size = (_conv_out(size[0], 3, 2, 1), _conv_out(size[1], 3, 2, 1))
            sizes.append(size)
        return sizes

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
        for field, value in (
            ("num_classes", self.num_classes),
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

    def check_stage_sizes(self, img: Array) -> None:
        """Raise a ``ValueError`` naming the stage if a stage's map does not split into its
        key / value reduction or its IWSA windows (stages without blocks have no constraint)."""
        sizes = self.feature_map_sizes(*img.shape[1:3])
        for s, (config, size) in enumerate(zip(self.stage_configs(), sizes, strict=True)):
            if config["depth"] == 0:
                continue
            check_stage_size(
                img,
                stage=s + 1,
                size=size,
                window=config["reduction_factor"],
                what="SSA key / value reduction (reduction_factor)",
                name="ScalableViT",
            )
            if config["window_size"] is not None:
                check_stage_size(
                    img,
                    stage=s + 1,
                    size=size,
                    window=config["window_size"],
                    what="IWSA window (window_size)",
                    name="ScalableViT",
                )

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        check_images(img, channels=self.channels, name="ScalableViT")
        self.check_stage_sizes(img)
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = nn.Conv(self.dim, (7, 7), strides=(4, 4), padding=((3, 3), (3, 3)), name="to_patches", **dtypes)(
            img
        )
        features = []
        for s, config in enumerate(self.stage_configs()):
            feature, x = Stage(
                **config,
                is_last=s == self.num_stages - 1,
                ff_expansion_factor=self.ff_expansion_factor,
                dropout=self.dropout,
                attention_implementation=self.attention_implementation,
                remat=self.remat,
                scan=self.scan,
                name=f"layers_{s}",
                **dtypes,
            )(x, train=train)
            features.append(feature)
        if return_features:
            return tuple(features)

        x = features[-1].mean(axis=(1, 2))  # Reduce('b d h w -> b d', 'mean')
        return MlpHead(self.num_classes, name="mlp_head", **dtypes)(x)
