"""CrossViT: "Cross-Attention Multi-Scale Vision Transformer for Image Classification"
(Chen, Fan and Panda, 2021), after vit-pytorch's ``cross_vit.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from crossvit_flax.cross_attention import CrossAttention, CrossAttentionLayer, CrossTransformer
from vit_layers_flax import (
    Attention,
    ClassifierHead,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    Layer,
    PatchEmbedding,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    check_config,
    check_images,
    token_map,
)
from vit_layers_flax.typing import Array


class ImageEmbedder(Layer):
    """One branch's tokens: ``(batch, height, width, channels) -> (batch, 1 + num_patches, dim)``.

    The shared :class:`~vit_layers_flax.PatchEmbedding` (``to_patch_embedding``) and
    :class:`~vit_layers_flax.TokenEmbedding` (``embedding``: class token, position
    embedding, ``dropout``).
    """

    dim: int
    patch_size: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        patch_size = (self.patch_size, self.patch_size)
        x = PatchEmbedding(
            self.dim, patch_size, name="to_patch_embedding", dtype=self.dtype, param_dtype=self.param_dtype
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
    cross_attn_dim_head: int = 64
    depth: int = 3
    dropout: float = 0.1
    emb_dropout: float = 0.1
    channels: int = 3
    attention_implementation: str | None = None

    def __post_init__(self):
        sizes = (self.image_size, self.sm_patch_size, self.lg_patch_size)
        check_config(
            all(isinstance(s, int) and s > 0 for s in sizes),
            f"CrossViT: image_size, sm_patch_size and lg_patch_size must be positive ints, received {sizes}",
        )
        for name in ("sm_patch_size", "lg_patch_size"):
            check_config(
                self.image_size % getattr(self, name) == 0,
                f"CrossViT: image_size {self.image_size} must be divisible by {name} {getattr(self, name)}",
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
                self.cross_attn_dim_head,
                self.depth,
                self.channels,
            )
            > 0,
            "CrossViT: sizes, depths and head counts must be positive",
        )
        check_config(
            self.num_classes >= 0, f"CrossViT: num_classes must not be negative, received {self.num_classes}"
        )
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        """The one image side the position embeddings fit: ``image_size``."""
        return InputSizes(self.image_size)

    @property
    def num_features(self) -> int:
        return self.sm_dim + self.lg_dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Per block ``i``: the small branch's grid (``sm_dim``, ``sm_patch_size``), the large's."""
        return tuple(
            FeatureInfo(dim, (patch, patch), f"multi_scale_encoder/layers_{i}/{branch}_enc")
            for i in range(self.depth)
            for branch, dim, patch in (
                ("sm", self.sm_dim, self.sm_patch_size),
                ("lg", self.lg_dim, self.lg_patch_size),
            )
        )

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        size = (self.image_size, self.image_size)
        check_images(img, channels=self.channels, image_size=size, name="CrossViT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        sm_tokens = ImageEmbedder(
            self.sm_dim, self.sm_patch_size, self.emb_dropout, name="sm_image_embedder", **dtypes
        )(img, train=train)
        lg_tokens = ImageEmbedder(
            self.lg_dim, self.lg_patch_size, self.emb_dropout, name="lg_image_embedder", **dtypes
        )(img, train=train)

        stacks = dict(remat=self.remat, scan=self.scan)
        attention = functools.partial(
            Attention, project_out=True, implementation=self.attention_implementation
        )  # the reference's branch attentions always project out

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
                **dtypes,
            )
            return functools.partial(Transformer, depth, block, **stacks, **dtypes)

        cross_attention = functools.partial(
            CrossAttention,
            heads=self.cross_attn_heads,
            dim_head=self.cross_attn_dim_head,
            dropout=self.dropout,
            implementation=self.attention_implementation,
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
                functools.partial(CrossAttentionLayer, self.sm_dim, self.lg_dim, cross_attention),
                **stacks,
            ),
        )
        encoder = Transformer(
            self.depth, block, final_norm=False, scan=self.scan, name="multi_scale_encoder", **dtypes
        )
        if return_features:
            # the cross-attention updates the class tokens only: the patch grids are the encoders'
            _, blocks = encoder((sm_tokens, lg_tokens), train=train, return_features=True)
            grids = [(self.image_size // p,) * 2 for p in (self.sm_patch_size, self.lg_patch_size)]
            maps = [token_map(t, grid, 1) for tokens in blocks for t, grid in zip(tokens, grids, strict=True)]
            return self.select_features(maps)
        sm_tokens, lg_tokens = encoder((sm_tokens, lg_tokens), train=train)

        # the small branch's head first: pre_logits concatenates in the order the Dense layers are made
        sm = ClassifierHead(self.num_classes, name="sm_mlp_head", **dtypes)(
            sm_tokens[:, 0], pre_logits=pre_logits
        )
        lg = ClassifierHead(self.num_classes, name="lg_mlp_head", **dtypes)(
            lg_tokens[:, 0], pre_logits=pre_logits
        )
        if pre_logits or not self.num_classes:
            return jnp.concatenate([sm, lg], axis=-1)
        return sm + lg
