"""CrossViT: "Cross-Attention Multi-Scale Vision Transformer for Image Classification"
(Chen, Fan and Panda, 2021), after vit-pytorch's ``cross_vit.py``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from crossvit_flax.multi_scale_encoder import MultiScaleEncoder
from vit_layers_flax import MlpHead, PatchEmbedding, check_config, check_images
from vit_layers_flax.typing import Array, Dtype


class ImageEmbedder(nn.Module):
    """Patch tokens with a class token prepended and a learned position embedding added.

    ``(batch, height, width, channels) -> (batch, 1 + num_patches, dim)``.

    ``patchify (p1 p2 c) -> LayerNorm -> Dense(dim) -> LayerNorm`` (``to_patch_embedding``),
    then ``[cls_token, patches] + pos_embedding`` and ``Dropout(dropout)`` in training.
    ``pos_embedding`` is ``(1 + num_patches, dim)`` and ``cls_token`` ``(1, dim)``: the
    reference's ``(1, N + 1, dim)`` and ``(1, 1, dim)`` without their batch axis.
    """

    dim: int
    patch_size: int
    dropout: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbedding(self.dim, (self.patch_size, self.patch_size), name="to_patch_embedding", **dtypes)(
            img
        )
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        pos_embedding = self.param("pos_embedding", init, (x.shape[1] + 1, self.dim), self.param_dtype)
        cls_token = self.param("cls_token", init, (1, self.dim), self.param_dtype)

        cls_tokens = repeat(cls_token.astype(x.dtype), "n d -> b n d", b=x.shape[0])
        x = jnp.concatenate([cls_tokens, x], axis=1) + pos_embedding.astype(x.dtype)
        return nn.Dropout(self.dropout)(x, deterministic=not train)


class CrossViT(nn.Module):
    """Dual-branch vision transformer fused by class-token cross-attention.

    ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    The image is embedded twice: into small patches (``sm_patch_size``, width ``sm_dim``)
    and into large ones (``lg_patch_size``, width ``lg_dim``), each with its own class
    token. ``depth`` multi-scale blocks then run each branch's transformer encoder
    (``sm_enc_*``, ``lg_enc_*``) followed by ``cross_attn_depth`` rounds of cross-attention
    in which each branch's class token attends to itself and the other branch's patch
    tokens (projected between the widths when they differ). Each class token goes through
    its own ``LayerNorm -> Dense`` head and the two logits are summed.

    Attributes follow vit-pytorch's ``CrossViT``, with its defaults (``dropout`` and
    ``emb_dropout`` are 0.1 there). ``image_size`` is an int (square images, as the
    reference) divisible by both patch sizes. ``dropout`` acts in the attention (weights
    and output) and feed-forward blocks, ``emb_dropout`` after the position embeddings,
    both only when ``train=True`` (rng stream ``'dropout'``). ``remat`` rematerialises each
    branch-transformer layer in the backward pass; ``attention_implementation`` is passed
    to :func:`jax.nn.dot_product_attention` (``None``, ``'xla'`` or ``'cudnn'``).
    ``dtype`` is the computation dtype, ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
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
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

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

        sm_tokens, lg_tokens = MultiScaleEncoder(
            depth=self.depth,
            sm_dim=self.sm_dim,
            lg_dim=self.lg_dim,
            sm_enc_depth=self.sm_enc_depth,
            sm_enc_heads=self.sm_enc_heads,
            sm_enc_mlp_dim=self.sm_enc_mlp_dim,
            sm_enc_dim_head=self.sm_enc_dim_head,
            lg_enc_depth=self.lg_enc_depth,
            lg_enc_heads=self.lg_enc_heads,
            lg_enc_mlp_dim=self.lg_enc_mlp_dim,
            lg_enc_dim_head=self.lg_enc_dim_head,
            cross_attn_heads=self.cross_attn_heads,
            cross_attn_depth=self.cross_attn_depth,
            cross_attn_dim_head=self.cross_attn_dim_head,
            dropout=self.dropout,
            remat=self.remat,
            scan=self.scan,
            attention_implementation=self.attention_implementation,
            name="multi_scale_encoder",
            **dtypes,
        )(sm_tokens, lg_tokens, train=train)

        sm_logits = MlpHead(self.num_classes, name="sm_mlp_head", **dtypes)(sm_tokens[:, 0])
        lg_logits = MlpHead(self.num_classes, name="lg_mlp_head", **dtypes)(lg_tokens[:, 0])
        return sm_logits + lg_logits
