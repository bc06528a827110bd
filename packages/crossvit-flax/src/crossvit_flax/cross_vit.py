"""CrossViT: "Cross-Attention Multi-Scale Vision Transformer for Image Classification"
(Chen, Fan and Panda, 2021), after vit-pytorch's ``cross_vit.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn

from crossvit_flax.cross_attention import CrossAttention, CrossAttentionLayer, CrossTransformer
from vit_layers_flax import (
    Attention,
    ClassifierHead,
    InputSizes,
    Layer,
    Model,
    PatchEmbedding,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    check_config,
    check_images,
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


class CrossViT(Model):
    """CrossViT (Chen, Fan and Panda, 2021; ICCV, arXiv:2103.14899): a dual-branch vision
    transformer fused by class-token cross-attention. ``(batch, image_size, image_size,
    channels) -> (batch, num_classes)``.

    The image is embedded into small patches (``sm_patch_size``, width ``sm_dim``) and large
    ones (``lg_patch_size``, ``lg_dim``). ``depth`` :class:`MultiScaleBlock` s run each
    branch's encoder (``sm_enc_*``, ``lg_enc_*``), then ``cross_attn_depth`` rounds of
    :class:`~crossvit_flax.CrossAttention`. Each class token has its own ``LayerNorm -> Dense``
    head and the logits are summed. ``image_size`` (square) must be divisible by both patch
    sizes; ``dropout`` acts in the attention and feed-forward blocks, ``emb_dropout`` after
    the position embeddings. The defaults are the reference's.
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
                self.num_classes,
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
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        """The one image side the position embeddings fit: ``image_size``."""
        return InputSizes(self.image_size)

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
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
        sm_tokens, lg_tokens = Transformer(
            self.depth, block, final_norm=False, scan=self.scan, name="multi_scale_encoder", **dtypes
        )((sm_tokens, lg_tokens), train=train)

        sm_logits = ClassifierHead(self.num_classes, name="sm_mlp_head", **dtypes)(sm_tokens[:, 0])
        lg_logits = ClassifierHead(self.num_classes, name="lg_mlp_head", **dtypes)(lg_tokens[:, 0])
        return sm_logits + lg_logits
