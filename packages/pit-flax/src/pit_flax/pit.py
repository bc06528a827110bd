"""PiT, after vit-pytorch's ``pit.py``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from pit_flax.pool import Pool
from vit_layers_flax import (
    Attention,
    Dense,
    FeatureInfo,
    FeedForward,
    ImageClassifier,
    InputSizes,
    Layer,
    LayerNorm,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    check_config,
    check_images,
    conv_output_size,
    grid_reduction,
    token_map,
    unfold,
)
from vit_layers_flax.typing import Array, Dtype


class Stage(NamedTuple):
    """One transformer stage: its token width, number of blocks, heads and MLP width."""

    dim: int
    depth: int
    heads: int
    mlp_dim: int


class PatchPositionEmbedding(nn.Module):
    """timm's PiT stem after the patch projection: ``(batch, n, dim) -> (batch, k + n, dim)``.

    A learned position embedding (``pos_embedding``, ``(n, dim)``) is added to the patch
    tokens alone and ``dropout`` applied to them in training; then ``num_class_tokens`` learned
    tokens (``cls_token``, ``(k, dim)``: the class token and DeiT's distillation token) are
    prepended, without position. The parameters are :class:`~vit_layers_flax.TokenEmbedding`'s
    (which gives the class tokens a position row too, as vit-pytorch's PiT), initialised
    ``N(0, 1)`` as it does.
    """

    num_class_tokens: int = 1
    dropout: float = 0.0
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        batch, tokens, dim = x.shape
        init = nn.initializers.normal(stddev=1.0)
        cls_token = self.param("cls_token", init, (self.num_class_tokens, dim), self.param_dtype)
        pos_embedding = self.param("pos_embedding", init, (tokens, dim), self.param_dtype)
        x = nn.Dropout(self.dropout)(x + pos_embedding.astype(x.dtype), deterministic=not train)
        cls_tokens = jnp.broadcast_to(cls_token.astype(x.dtype), (batch, self.num_class_tokens, dim))
        return jnp.concatenate([cls_tokens, x], axis=1)


class Head(Layer):
    """PiT's head on the class tokens: ``(batch, tokens, dim) -> (batch, num_classes)``.

    A LayerNorm ``norm`` (``norm_epsilon``) on the first ``class_tokens`` tokens, then a
    Dense ``fc`` on the class token: vit-pytorch's ``mlp_head`` (the parameters of
    :class:`~vit_layers_flax.ClassifierHead`, ``norm`` and ``fc``). With two class tokens
    (DeiT's distillation token, timm's distilled PiT) a second Dense ``fc_dist`` reads the
    second token and the logits are the mean of both. ``pre_logits`` (or ``num_classes ==
    0``, no Dense) returns the normalised class token, or the mean of both.
    """

    num_classes: int
    class_tokens: int = 1
    norm_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, *, pre_logits: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dtypes)(x[:, : self.class_tokens])
        if pre_logits or not self.num_classes:
            return x.mean(axis=1) if self.class_tokens > 1 else x[:, 0]
        logits = Dense(self.num_classes, name="fc", **dtypes)(x[:, 0])
        if self.class_tokens == 1:
            return logits
        return (logits + Dense(self.num_classes, name="fc_dist", **dtypes)(x[:, 1])) / 2


class PiT(ImageClassifier):
    """Pooling-based Vision Transformer: ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    Heo, Yun, Han, Chun, Choe, Oh, "Rethinking Spatial Dimensions of Vision Transformers",
    ICCV 2021 (arXiv:2103.16302). Overlapping ``patch_size`` patches (stride
    ``patch_size // 2``) are projected to ``dim`` tokens; a class token and a position
    embedding are added. ``depth`` holds the number of blocks of each stage, ``heads`` an
    int or one entry per stage. Between stages a :class:`~pit_flax.Pool` halves the token
    grid (rounding up) and doubles the width, so stage ``i`` (``stages_{i}``, no final
    norm, then ``pools_{i}``) is ``dim * 2**i`` wide; ``dim_head`` and ``mlp_dim`` are
    the same in every stage. The head reads the class token. Feature maps: each stage's
    patch grid after its transformer (class token dropped, before the pool).
    """

    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: Sequence[int]
    heads: int | Sequence[int]
    mlp_dim: int | Sequence[int]
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    channels: int = 3
    attention_implementation: str | None = None
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    pool_pointwise: bool = True
    class_token_position: bool = True
    distilled: bool = False

    @property
    def class_tokens(self) -> int:
        """The prefix tokens: the class token, and the distillation token when ``distilled``."""
        return 1 + self.distilled

    @property
    def stages(self) -> list[Stage]:
        """``Stage(dim, depth, heads, mlp_dim)`` of each stage, widths doubling after every pool."""
        depth = tuple(self.depth)
        heads, mlp_dims = (_per_stage(v, len(depth)) for v in (self.heads, self.mlp_dim))
        return [
            Stage(self.dim * 2**i, d, h, m)
            for i, (d, h, m) in enumerate(zip(depth, heads, mlp_dims, strict=True))
        ]

    @property
    def num_patches(self) -> int:
        """Tokens after the patch embedding: the overlapping patches' grid, squared."""
        return conv_output_size(self.image_size, self.patch_size, self.patch_size // 2) ** 2

    @property
    def grid_sides(self) -> list[int]:
        """The side of each stage's token grid: the patches' grid, then halved (rounding up)."""
        sides = [conv_output_size(self.image_size, self.patch_size, self.patch_size // 2)]
        for _ in self.depth[1:]:
            sides.append(-(-sides[-1] // 2))
        return sides

    @property
    def num_features(self) -> int:
        return self.stages[-1].dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        return tuple(
            FeatureInfo(stage.dim, grid_reduction(self.image_size, (side, side)), f"stages_{i}")
            for i, (stage, side) in enumerate(zip(self.stages, self.grid_sides, strict=True))
        )

    def __post_init__(self):
        check_config(
            isinstance(self.image_size, int) and isinstance(self.patch_size, int),
            f"PiT: image_size and patch_size must be ints (square images), received "
            f"{self.image_size!r} and {self.patch_size!r}",
        )
        check_config(
            self.patch_size >= 2,
            f"PiT: patch_size must be at least 2 (the stride is patch_size // 2), received {self.patch_size}",
        )
        check_config(
            self.image_size % self.patch_size == 0,
            f"PiT: image_size {self.image_size} must be divisible by patch_size {self.patch_size}",
        )
        check_config(
            isinstance(self.depth, (tuple, list)) and len(self.depth) > 0,
            f"PiT: depth must be a tuple with the number of blocks of each stage, received {self.depth!r}",
        )
        check_config(
            not isinstance(self.heads, (tuple, list)) or len(self.heads) == len(self.depth),
            f"PiT: heads must be an int or have one entry per stage ({len(self.depth)}), "
            f"received {self.heads!r}",
        )
        check_config(
            not isinstance(self.mlp_dim, (tuple, list)) or len(self.mlp_dim) == len(self.depth),
            f"PiT: mlp_dim must be an int or have one entry per stage ({len(self.depth)}), "
            f"received {self.mlp_dim!r}",
        )
        check_config(
            min(*self.depth, *_per_stage(self.heads, 1), *_per_stage(self.mlp_dim, 1)) > 0
            and min(self.dim, self.dim_head, self.channels) > 0,
            "PiT: sizes must be positive",
        )
        check_config(self.num_classes >= 0, f"PiT: num_classes must be >= 0, received {self.num_classes}")
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        return InputSizes(self.image_size)

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        size = (self.image_size, self.image_size)
        check_images(img, channels=self.channels, image_size=size, name="PiT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = unfold(img, self.patch_size, self.patch_size // 2)  # (batch, num_patches, c * p * p)
        x = Dense(self.dim, name="to_patch_embedding", **dtypes)(x)
        embedding = TokenEmbedding if self.class_token_position else PatchPositionEmbedding
        x = embedding(self.class_tokens, self.emb_dropout, param_dtype=self.param_dtype, name="embedding")(
            x, train=train
        )

        eps = self.norm_epsilon
        attention = functools.partial(
            Attention, implementation=self.attention_implementation, qkv_bias=self.qkv_bias, norm_epsilon=eps
        )
        stages, maps = self.stages, []
        for i, (stage, side) in enumerate(zip(stages, self.grid_sides, strict=True)):
            block = functools.partial(
                TransformerBlock,
                stage.dim,
                stage.heads,
                self.dim_head,
                stage.mlp_dim,
                dropout=self.dropout,
                attention=attention,
                feed_forward=functools.partial(FeedForward, norm_epsilon=eps),
                **dtypes,
            )
            x = Transformer(
                stage.depth,
                block,
                final_norm=False,
                remat=self.remat,
                scan=self.scan,
                name=f"stages_{i}",
                **dtypes,
            )(x, train=train)
            maps.append(token_map(x, (side, side), self.class_tokens))
            if i < len(stages) - 1:
                pool = Pool(
                    stage.dim,
                    pointwise=self.pool_pointwise,
                    class_tokens=self.class_tokens,
                    name=f"pools_{i}",
                    **dtypes,
                )
                x = pool(x)

        if return_features:
            return self.select_features(maps)
        head = Head(
            self.num_classes, class_tokens=self.class_tokens, norm_epsilon=eps, name="mlp_head", **dtypes
        )
        return head(x, pre_logits=pre_logits)


def _per_stage(value: int | Sequence[int], stages: int) -> tuple[int, ...]:
    """An int for every stage, or one entry per stage, as a tuple."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * stages
