"""CvT: "Introducing Convolutions to Vision Transformers" (Wu et al., 2021), after vit-pytorch's ``cvt.py``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from cvt_flax.attention import ConvAttention
from vit_layers_flax import ChanLayerNorm, Transformer, check_config, check_images
from vit_layers_flax.typing import Array, Dtype

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


class Stage(nn.Module):
    """One CvT stage: convolutional token embedding, channel LayerNorm, transformer.

    ``(batch, H, W, C) -> (batch, H', W', emb_dim)`` with ``H' = (H + 2 * (emb_kernel // 2)
    - emb_kernel) // emb_stride + 1`` (and likewise ``W'``). Parameters ``conv`` (the
    reference's ``layers.{s}.0``, a strided convolution with bias), ``norm`` (``.1``, ``g``,
    ``b``) and ``transformer`` (``.2``, the shared :class:`vit_layers_flax.Transformer` of
    :class:`~cvt_flax.attention.ConvAttention` blocks, without final norm).
    """

    emb_dim: int
    emb_kernel: int
    emb_stride: int
    proj_kernel: int
    kv_proj_stride: int
    heads: int
    depth: int
    mlp_mult: int
    dropout: float = 0.0
    attention_implementation: str | None = None
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        pad = self.emb_kernel // 2
        x = nn.Conv(
            self.emb_dim,
            (self.emb_kernel, self.emb_kernel),
            strides=(self.emb_stride, self.emb_stride),
            padding=((pad, pad), (pad, pad)),
            name="conv",
            **dtypes,
        )(x)
        x = ChanLayerNorm(name="norm", **dtypes)(x)
        # vit-pytorch's cvt.Transformer is the shared stack of pre-norm residual blocks, with
        # the convolutional attention; its feed-forward (channel LayerNorm, 1 x 1 convs) is the
        # shared FeedForward on the channel axis of the NHWC map. No final norm.
        return Transformer(
            self.emb_dim,
            self.depth,
            self.heads,
            DIM_HEAD,
            self.emb_dim * self.mlp_mult,
            dropout=self.dropout,
            final_norm=False,
            attention_cls=ConvAttention,
            attention_kwargs={
                "proj_kernel": self.proj_kernel,
                "kv_proj_stride": self.kv_proj_stride,
                "implementation": self.attention_implementation,
            },
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )(x, train=train)


class CvT(nn.Module):
    """Convolutional vision Transformer: three stages of conv embedding + conv-projection attention.

    ``(batch, height, width, channels) -> (batch, num_classes)``, for any ``height`` and
    ``width`` (the model is fully convolutional; each stage's embedding divides the size by
    about its stride).

    Attributes follow vit-pytorch's ``CvT``: for each stage ``s1``, ``s2``, ``s3`` the
    embedding width ``emb_dim``, kernel ``emb_kernel`` and stride ``emb_stride`` of the
    token-embedding convolution (padding ``emb_kernel // 2``), the kernel ``proj_kernel``
    of the depthwise-separable query/key/value projections and the stride
    ``kv_proj_stride`` of the key/value one, ``heads`` (of 64 channels each), ``depth``
    and the feed-forward expansion ``mlp_mult``. The last stage's map is averaged over
    space and classified by ``to_logits`` (a ``Dense``). ``dropout`` acts on the attention
    weights and after the attention and feed-forward projections, only when
    ``train=True`` (rng stream ``'dropout'``). The projections' BatchNorms use batch
    statistics when ``train=True`` (updating ``batch_stats`` when it is passed as mutable,
    ``mutable=['batch_stats']``) and the running averages otherwise.
    ``attention_implementation`` is passed to :func:`jax.nn.dot_product_attention`
    (``None``, ``'xla'`` or ``'cudnn'``); ``remat`` rematerialises each transformer block in
    the backward pass (less memory, same results). ``dtype`` is the computation dtype,
    ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
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
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def stage_config(self, stage: int) -> dict[str, int]:
        """The ``s{stage}_*`` attributes (``stage`` 1, 2 or 3) without their prefix."""
        return {name: getattr(self, f"s{stage}_{name}") for name in STAGE_FIELDS}

    def __post_init__(self):
        check_config(self.num_classes > 0, f"CvT: num_classes must be positive, received {self.num_classes}")
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

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        check_images(img, channels=self.channels, name="CvT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = img
        for stage in (1, 2, 3):
            x = Stage(
                **self.stage_config(stage),
                dropout=self.dropout,
                attention_implementation=self.attention_implementation,
                remat=self.remat,
                scan=self.scan,
                name=f"layers_{stage - 1}",
                **dtypes,
            )(x, train=train)

        x = x.mean(axis=(1, 2))  # AdaptiveAvgPool2d(1)
        return nn.Dense(self.num_classes, name="to_logits", **dtypes)(x)
