"""Twins-SVT: "Twins: Revisiting the Design of Spatial Attention in Vision Transformers"
(Chu et al., 2021), after vit-pytorch's ``twins_svt.py``."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from twins_svt_flax.block import TwinsBlock
from twins_svt_flax.patch_embedding import PatchEmbedding
from vit_layers_flax import PEG, Transformer, check_config, check_images, check_stage_size
from vit_layers_flax.typing import Array, Dtype

#: the reference's ``TwinsSVT`` builds its transformers with their defaults: 8 heads of 64
#: channels and a feed-forward four times the stage width, in every stage.
HEADS = 8
DIM_HEAD = 64
MLP_MULT = 4
#: the reference's first patch embedding takes 3 channels (it has no ``channels`` argument).
CHANNELS = 3

STAGE_FIELDS = ("emb_dim", "patch_size", "local_patch_size", "global_k", "depth")
NUM_STAGES = 4


class Stage(nn.Module):
    """One Twins-SVT stage: ``(batch, H, W, C) -> (batch, H / patch_size, W / patch_size, emb_dim)``.

    :class:`~twins_svt_flax.patch_embedding.PatchEmbedding` (``patch_embedding``, the
    reference's ``layers.{s}.0``), one :class:`~twins_svt_flax.block.TwinsBlock`
    (``first_transformer``, ``.1``), the positional encoding generator
    (:class:`vit_layers_flax.PEG`, ``peg``, ``.2``), then ``depth`` more blocks
    (``transformer``, ``.3``): a stage has ``depth + 1`` blocks, as in the reference. Both
    stacks are the shared :class:`vit_layers_flax.Transformer` of Twins blocks, without
    final norm. ``has_local=False`` (the last stage) leaves only global attention.
    """

    emb_dim: int
    patch_size: int
    local_patch_size: int
    global_k: int
    depth: int
    has_local: bool = True
    peg_kernel_size: int = 3
    dropout: float = 0.0
    attention_implementation: str | None = None
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbedding(self.emb_dim, self.patch_size, name="patch_embedding", **dtypes)(x)

        def transformer(depth: int, name: str) -> Transformer:
            return Transformer(
                self.emb_dim,
                depth,
                HEADS,
                DIM_HEAD,
                self.emb_dim * MLP_MULT,
                dropout=self.dropout,
                final_norm=False,
                attention_kwargs={"implementation": self.attention_implementation},
                block_cls=TwinsBlock,
                block_kwargs={
                    "local_patch_size": self.local_patch_size,
                    "global_k": self.global_k,
                    "has_local": self.has_local,
                },
                remat=self.remat,
                scan=self.scan,
                name=name,
                **dtypes,
            )

        x = transformer(1, "first_transformer")(x, train=train)
        x = PEG(self.peg_kernel_size, name="peg", **dtypes)(x)
        return transformer(self.depth, "transformer")(x, train=train)


class TwinsSVT(nn.Module):
    """Twins-SVT: a four-stage pyramid of locally-grouped and global sub-sampled attention.

    ``(batch, height, width, 3) -> (batch, num_classes)``; with ``return_features=True``,
    ``-> tuple`` of the four stages' NHWC feature maps ``(batch, height / P_s, width / P_s,
    s{s}_emb_dim)``, ``P_s`` the product of the patch sizes of stages 1 to ``s``.

    Attributes follow vit-pytorch's ``TwinsSVT``: for each stage ``s1`` ... ``s4`` the
    width ``emb_dim``, the ``patch_size`` its patch embedding merges (space to depth),
    the side ``local_patch_size`` of the windows of its locally-grouped attention
    (unused in stage 4, which has no local attention, as in the reference), the stride
    ``global_k`` of the convolution that sub-samples the keys and values of its global
    attention, and ``depth``, the number of blocks after the PEG (a stage has
    ``depth + 1`` blocks). Every attention has 8 heads of 64 channels and every
    feed-forward four times the stage width (fixed in the reference). ``peg_kernel_size``
    is the kernel of the depthwise positional-encoding convolution after each stage's
    first block. The last map is averaged over space and classified by ``to_logits``.

    The images need no fixed size, but each stage's map must split into its patches and
    its local windows (stage ``s`` sees ``height / P_{s-1}``, must divide by ``patch_size``,
    then by ``local_patch_size``) and be at least ``global_k`` on each side; a global
    stride that does not divide the map is floored, as torch's convolution does.
    :attr:`min_image_size` is the smallest square side this model takes. Sizes are
    checked at trace time with a ``ValueError`` naming the stage.

    ``dropout`` acts on the global attention weights and after every attention and
    feed-forward projection, only when ``train=True`` (rng stream ``'dropout'``).
    ``attention_implementation`` is passed to :func:`jax.nn.dot_product_attention`
    (``None``, ``'xla'`` or ``'cudnn'``); ``remat`` rematerialises each block in the
    backward pass (less memory, same results). ``dtype`` is the computation dtype,
    ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
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
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def stage_config(self, stage: int) -> dict[str, int]:
        """The ``s{stage}_*`` attributes (``stage`` 1 to 4) without their prefix."""
        return {name: getattr(self, f"s{stage}_{name}") for name in STAGE_FIELDS}

    @property
    def min_image_size(self) -> int:
        """The smallest side of a square image every stage can take (patches, windows, global stride)."""
        unit, need, reduction = 1, 1, 1
        for stage in range(1, NUM_STAGES + 1):
            config = self.stage_config(stage)
            reduction *= config["patch_size"]
            unit = math.lcm(unit, reduction)
            if stage < NUM_STAGES:
                unit = math.lcm(unit, reduction * config["local_patch_size"])
            need = max(need, reduction * config["global_k"])
        return unit * -(-need // unit)

    def __post_init__(self):
        name = "TwinsSVT"
        check_config(
            self.num_classes > 0, f"{name}: num_classes must be positive, received {self.num_classes}"
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
            check_stage_size(
                img,
                stage=stage,
                size=(height, width),
                window=config["patch_size"],
                what="patch size",
                name="TwinsSVT",
            )
            height, width = height // config["patch_size"], width // config["patch_size"]
            if stage < NUM_STAGES:
                check_stage_size(
                    img,
                    stage=stage,
                    size=(height, width),
                    window=config["local_patch_size"],
                    what="local window",
                    name="TwinsSVT",
                )
            k = config["global_k"]
            if height < k or width < k:
                # the stride-k key / value convolution floors a size that k does not divide, as
                # torch's does; it only needs one whole k x k patch
                raise ValueError(
                    f"TwinsSVT: images of shape {tuple(img.shape)} give stage {stage} a {height}x{width} feature "
                    f"map, but its global sub-sampling stride is {k}x{k}: expected a feature map of at least "
                    f"{k}x{k} (the smallest square image this model takes is {self.min_image_size}x{self.min_image_size})"
                )

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False, return_features: bool = False):
        """``(batch, height, width, 3) -> (batch, num_classes)``, or with ``return_features=True``
        the tuple of the four stages' NHWC maps (the head is not run)."""
        check_images(img, channels=CHANNELS, name="TwinsSVT")
        self._check_stage_sizes(img)
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x, features = img, []
        for stage in range(1, NUM_STAGES + 1):
            x = Stage(
                **self.stage_config(stage),
                has_local=stage < NUM_STAGES,
                peg_kernel_size=self.peg_kernel_size,
                dropout=self.dropout,
                attention_implementation=self.attention_implementation,
                remat=self.remat,
                scan=self.scan,
                name=f"layers_{stage - 1}",
                **dtypes,
            )(x, train=train)
            features.append(x)
        if return_features:
            return tuple(features)

        x = x.mean(axis=(1, 2))  # AdaptiveAvgPool2d(1)
        return nn.Dense(self.num_classes, name="to_logits", **dtypes)(x)
