"""CrossViT: "Cross-Attention Multi-Scale Vision Transformer for Image Classification"
(Chen, Fan and Panda, 2021), after vit-pytorch's ``cross_vit.py``; options give the original
architecture (timm's ``crossvit``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from crossvit_flax.cross_attention import LAYOUTS, CrossAttention, CrossAttentionLayer, CrossTransformer
from vit_layers_flax import (
    Attention,
    ClassifierHead,
    Conv,
    FeatureInfo,
    FeedForward,
    ImageClassifier,
    InputSizes,
    Layer,
    PatchEmbedding,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    check_config,
    check_images,
    grid_reduction,
    resize_bicubic,
    token_map,
)
from vit_layers_flax.typing import Array

#: the patch sizes timm's 3-convolution patch embedding (``multi_conv``) is defined for
MULTI_CONV_PATCH_SIZES = (12, 16)


class ConvPatchEmbedding(Layer):
    """timm's ``multi_conv`` patch embedding (the "dagger" CrossViTs):
    ``(batch, H, W, C) -> (batch, (H / p) * (W / p), dim)`` through three convolutions with
    ReLUs between them: ``7x7/4`` (pad 3) to ``dim // 4`` channels, then for ``patch_size``
    12 ``3x3/3`` (pad 0) and ``3x3/1`` (pad 1), for 16 ``3x3/2`` and ``3x3/2`` (pad 1), to
    ``dim // 2`` and ``dim``. Parameters ``conv_0``, ``conv_1``, ``conv_2`` (timm's
    ``proj.0``, ``proj.2``, ``proj.4``)."""

    dim: int
    patch_size: int

    @nn.compact
    def __call__(self, img: Array) -> Array:
        if self.patch_size not in MULTI_CONV_PATCH_SIZES:
            raise ValueError(
                f"ConvPatchEmbedding: patch_size must be one of {MULTI_CONV_PATCH_SIZES}, "
                f"received {self.patch_size}"
            )
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # (features, kernel, stride, padding) of each convolution
        if self.patch_size == 12:
            layers = ((self.dim // 4, 7, 4, 3), (self.dim // 2, 3, 3, 0), (self.dim, 3, 1, 1))
        else:
            layers = ((self.dim // 4, 7, 4, 3), (self.dim // 2, 3, 2, 1), (self.dim, 3, 2, 1))
        x = img
        for i, (features, kernel, stride, padding) in enumerate(layers):
            if i:
                x = nn.relu(x)
            x = Conv(features, kernel, stride, padding, name=f"conv_{i}", **dtypes)(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class ImageEmbedder(Layer):
    """One branch's tokens: ``(batch, height, width, channels) -> (batch, 1 + num_patches, dim)``.

    The shared :class:`~vit_layers_flax.PatchEmbedding` (``to_patch_embedding``; without its
    LayerNorms where ``patch_norms=False``: timm's patch convolution) or, with
    ``multi_conv``, a :class:`ConvPatchEmbedding`, then the shared
    :class:`~vit_layers_flax.TokenEmbedding` (``embedding``: class token, position embedding,
    ``dropout``). ``image_size``: the side the image is first resized to, as torch's
    ``F.interpolate(mode='bicubic', align_corners=False)`` (timm's second branch); ``None``
    (default): the image as it comes.
    """

    dim: int
    patch_size: int
    dropout: float = 0.0
    patch_norms: bool = True
    multi_conv: bool = False
    image_size: int | None = None

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.image_size is not None:
            img = resize_bicubic(img, (self.image_size, self.image_size))
        if self.multi_conv:
            x = ConvPatchEmbedding(self.dim, self.patch_size, name="to_patch_embedding", **dtypes)(img)
        else:
            patch_size = (self.patch_size, self.patch_size)
            x = PatchEmbedding(
                self.dim, patch_size, norms=self.patch_norms, name="to_patch_embedding", **dtypes
            )(img)
        return TokenEmbedding(dropout=self.dropout, param_dtype=self.param_dtype, name="embedding")(
            x, train=train
        )


class MultiScaleBlock(nn.Module):
    """One multi-scale block (the reference's ``multi_scale_encoder.layers.{i}``): each branch's
    own transformer encoder, then cross-attention fusion of the class tokens.

    ``(sm_tokens, lg_tokens)`` of shapes ``(batch, 1 + sm_patches, sm_dim)`` and
    ``(batch, 1 + lg_patches, lg_dim)`` in and out. ``sm_encoder``, ``lg_encoder`` and
    ``cross_transformer`` build, from a ``name``, the small branch's encoder (``sm_enc``, the
    reference's ``.0``), the large branch's (``lg_enc``, ``.1``) and the
    :class:`~crossvit_flax.CrossTransformer` (``cross_attend``, ``.2``).
    """

    sm_encoder: Callable[..., nn.Module]
    lg_encoder: Callable[..., nn.Module]
    cross_transformer: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, tokens: tuple[Array, Array], *, train: bool = False) -> tuple[Array, Array]:
        sm_tokens, lg_tokens = tokens
        sm_tokens = self.sm_encoder(name="sm_enc")(sm_tokens, train=train)
        lg_tokens = self.lg_encoder(name="lg_enc")(lg_tokens, train=train)
        return self.cross_transformer(name="cross_attend")(sm_tokens, lg_tokens, train=train)


class CrossViT(ImageClassifier):
    """CrossViT (Chen, Fan and Panda, 2021; ICCV, arXiv:2103.14899): a dual-branch vision
    transformer fused by class-token cross-attention. Feature maps: after each block, the
    small branch's patch grid, then the large branch's.

    The image is embedded into small patches (``sm_patch_size``, width ``sm_dim``) and large
    ones (``lg_patch_size``, ``lg_dim``). ``depth`` :class:`MultiScaleBlock` s run each
    branch's encoder (``sm_enc_*``, ``lg_enc_*``), then ``cross_attn_depth`` rounds of
    :class:`~crossvit_flax.CrossAttention`. Each class token has its own ``LayerNorm -> Dense``
    head and the logits are summed (``pre_logits``: both normalised class tokens, concatenated).
    ``image_size`` (square) must be divisible by both patch sizes; ``dropout`` acts in the
    blocks, ``emb_dropout`` after the position embeddings. The defaults are the reference's.

    The original architecture (timm's ``crossvit``, the pretrained presets) is these options,
    whose defaults keep vit-pytorch's: ``image_scales`` (each branch sees the image resized to
    ``int(scale * image_size)``, torch's bicubic; timm's ``img_scale``, ``(1.0, 224 / 240)``),
    ``patch_norms=False`` (the patch projection without LayerNorms: timm's patch convolution),
    ``multi_conv=True`` (timm's 3-convolution patch embedding of the "dagger" models),
    ``qkv_bias=True``, ``norm_epsilon=1e-6`` (every LayerNorm but the patch embedding's),
    ``encoder_norms=False`` (no final LayerNorm in the branch encoders),
    ``cross_attn_layout="timm"`` (see :class:`~crossvit_flax.CrossAttention`),
    ``cross_attn_dim_head=None`` (each cross-attention head ``width // cross_attn_heads``
    wide) and ``average_heads=True`` (the logits the mean of the two heads').
    """

    image_size: int
    num_classes: int
    sm_dim: int
    lg_dim: int
    sm_patch_size: int = 12
    sm_enc_depth: int = 1
    sm_enc_heads: int = 8
    sm_enc_mlp_dim: int = 2048
    sm_enc_dim_head: int = 64
    lg_patch_size: int = 16
    lg_enc_depth: int = 4
    lg_enc_heads: int = 8
    lg_enc_mlp_dim: int = 2048
    lg_enc_dim_head: int = 64
    cross_attn_depth: int = 2
    cross_attn_heads: int = 8
    cross_attn_dim_head: int | None = 64
    depth: int = 3
    dropout: float = 0.1
    emb_dropout: float = 0.1
    channels: int = 3
    attention_implementation: str | None = None
    image_scales: tuple[float, float] = (1.0, 1.0)
    patch_norms: bool = True
    multi_conv: bool = False
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    encoder_norms: bool = True
    cross_attn_layout: str = "vit-pytorch"
    average_heads: bool = False

    def __post_init__(self):
        sizes = (self.image_size, self.sm_patch_size, self.lg_patch_size)
        check_config(
            all(isinstance(s, int) and s > 0 for s in sizes),
            f"CrossViT: image_size, sm_patch_size and lg_patch_size must be positive ints, received {sizes}",
        )
        scales = self.image_scales
        check_config(
            isinstance(scales, tuple)
            and len(scales) == 2
            and all(isinstance(s, (int, float)) and s > 0 for s in scales),
            f"CrossViT: image_scales must be a tuple of two positive numbers, received {scales!r}",
        )
        for name, side, scale in zip(
            ("sm_patch_size", "lg_patch_size"), self.branch_image_sizes, scales, strict=True
        ):
            scaled = "" if side == self.image_size else f" scaled by {scale:.6g} ({side}, rounded down)"
            check_config(
                side > 0 and side % getattr(self, name) == 0,
                f"CrossViT: image_size {self.image_size}{scaled} must be divisible by {name} "
                f"{getattr(self, name)}",
            )
        check_config(
            min(
                self.sm_dim,
                self.lg_dim,
                self.sm_enc_depth,
                self.sm_enc_heads,
                self.sm_enc_mlp_dim,
                self.sm_enc_dim_head,
                self.lg_enc_depth,
                self.lg_enc_heads,
                self.lg_enc_mlp_dim,
                self.lg_enc_dim_head,
                self.cross_attn_depth,
                self.cross_attn_heads,
                1 if self.cross_attn_dim_head is None else self.cross_attn_dim_head,
                self.depth,
                self.channels,
            )
            > 0,
            "CrossViT: sizes, depths and head counts must be positive",
        )
        check_config(
            self.num_classes >= 0, f"CrossViT: num_classes must not be negative, received {self.num_classes}"
        )
        check_config(
            self.cross_attn_layout in LAYOUTS,
            f"CrossViT: cross_attn_layout must be one of {LAYOUTS}, received {self.cross_attn_layout!r}",
        )
        if self.cross_attn_dim_head is None:
            check_config(
                self.sm_dim % self.cross_attn_heads == 0 and self.lg_dim % self.cross_attn_heads == 0,
                f"CrossViT: cross_attn_dim_head=None needs sm_dim {self.sm_dim} and lg_dim {self.lg_dim} "
                f"divisible by cross_attn_heads {self.cross_attn_heads}",
            )
        if self.multi_conv:
            patches = (self.sm_patch_size, self.lg_patch_size)
            check_config(
                all(p in MULTI_CONV_PATCH_SIZES for p in patches),
                f"CrossViT: multi_conv=True (timm's 3-convolution patch embedding) is defined for patch "
                f"sizes {MULTI_CONV_PATCH_SIZES}, received sm_patch_size={patches[0]}, "
                f"lg_patch_size={patches[1]}",
            )
            check_config(
                not self.patch_norms,
                "CrossViT: multi_conv=True replaces the patch embedding, which then has no LayerNorms: "
                "set patch_norms=False",
            )
        super().__post_init__()

    @property
    def branch_image_sizes(self) -> tuple[int, int]:
        """The image side each branch embeds: ``int(scale * image_size)`` for ``image_scales``
        (timm's rounding)."""
        return tuple(int(self.image_size * s) for s in self.image_scales)  # type: ignore[return-value]

    @property
    def grid_sides(self) -> tuple[int, int]:
        """The side of each branch's patch grid (small, large)."""
        sm, lg = self.branch_image_sizes
        return sm // self.sm_patch_size, lg // self.lg_patch_size

    def input_sizes(self) -> InputSizes:
        """The one image side the position embeddings fit: ``image_size``."""
        return InputSizes(self.image_size)

    @property
    def num_features(self) -> int:
        return self.sm_dim + self.lg_dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Per block ``i``: the small branch's grid (``sm_dim``), then the large's (``lg_dim``);
        the reduction is the image over the grid (the patch size, at ``image_scales`` 1)."""
        return tuple(
            FeatureInfo(
                dim,
                grid_reduction(self.image_size, (side, side)),
                f"multi_scale_encoder/layers_{i}/{branch}_enc",
            )
            for i in range(self.depth)
            for branch, dim, side in zip(
                ("sm", "lg"), (self.sm_dim, self.lg_dim), self.grid_sides, strict=True
            )
        )

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        size = (self.image_size, self.image_size)
        check_images(img, channels=self.channels, image_size=size, name="CrossViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        timm = self.cross_attn_layout == "timm"

        embedders = [
            ImageEmbedder(
                dim,
                patch,
                self.emb_dropout,
                patch_norms=self.patch_norms,
                multi_conv=self.multi_conv,
                image_size=None if side == self.image_size else side,
                name=f"{branch}_image_embedder",
                **dtypes,
            )
            for branch, dim, patch, side in zip(
                ("sm", "lg"),
                (self.sm_dim, self.lg_dim),
                (self.sm_patch_size, self.lg_patch_size),
                self.branch_image_sizes,
                strict=True,
            )
        ]
        sm_tokens, lg_tokens = (embedder(img, train=train) for embedder in embedders)

        stacks = dict(remat=self.remat, scan=self.scan)
        attention = functools.partial(
            Attention,
            project_out=True,  # the reference's branch attentions always project out
            implementation=self.attention_implementation,
            qkv_bias=self.qkv_bias,
            norm_epsilon=self.norm_epsilon,
        )
        feed_forward = functools.partial(FeedForward, norm_epsilon=self.norm_epsilon)

        def encoder(
            dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int
        ) -> Callable[..., nn.Module]:
            block = functools.partial(
                TransformerBlock,
                dim,
                heads,
                dim_head,
                mlp_dim,
                dropout=self.dropout,
                attention=attention,
                feed_forward=feed_forward,
                **dtypes,
            )
            return functools.partial(
                Transformer,
                depth,
                block,
                final_norm=self.encoder_norms,
                norm_epsilon=self.norm_epsilon,
                **stacks,
                **dtypes,
            )

        cross_attention = functools.partial(
            CrossAttention,
            heads=self.cross_attn_heads,
            dim_head=self.cross_attn_dim_head,
            dropout=self.dropout,
            implementation=self.attention_implementation,
            layout=self.cross_attn_layout,
            qkv_bias=self.qkv_bias,
            norm_epsilon=self.norm_epsilon,
            **dtypes,
        )
        block = functools.partial(
            MultiScaleBlock,
            encoder(
                self.sm_dim, self.sm_enc_depth, self.sm_enc_heads, self.sm_enc_dim_head, self.sm_enc_mlp_dim
            ),
            encoder(
                self.lg_dim, self.lg_enc_depth, self.lg_enc_heads, self.lg_enc_dim_head, self.lg_enc_mlp_dim
            ),
            functools.partial(
                CrossTransformer,
                self.cross_attn_depth,
                functools.partial(
                    CrossAttentionLayer, self.sm_dim, self.lg_dim, cross_attention, residual=not timm
                ),
                **stacks,
            ),
        )
        encoder = Transformer(
            self.depth, block, final_norm=False, scan=self.scan, name="multi_scale_encoder", **dtypes
        )
        if return_features:
            # the cross-attention updates the class tokens only: the patch grids are the encoders'
            _, blocks = encoder((sm_tokens, lg_tokens), train=train, return_features=True)
            grids = [(side, side) for side in self.grid_sides]
            maps = [token_map(t, grid, 1) for tokens in blocks for t, grid in zip(tokens, grids, strict=True)]
            return self.select_features(maps)
        sm_tokens, lg_tokens = encoder((sm_tokens, lg_tokens), train=train)

        # the small branch's head first: pre_logits concatenates in the order the Dense layers are made
        heads = dict(norm_epsilon=self.norm_epsilon, **dtypes)
        sm = ClassifierHead(self.num_classes, name="sm_mlp_head", **heads)(
            sm_tokens[:, 0], pre_logits=pre_logits
        )
        lg = ClassifierHead(self.num_classes, name="lg_mlp_head", **heads)(
            lg_tokens[:, 0], pre_logits=pre_logits
        )
        if pre_logits or not self.num_classes:
            return jnp.concatenate([sm, lg], axis=-1)
        return (sm + lg) / 2 if self.average_heads else sm + lg
