"""DeepViT: "Towards Deeper Vision Transformer" (Zhou et al., 2021), after vit-pytorch's ``deepvit.py``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from deepvit_flax.re_attention import ReAttention
from vit_layers_flax import MlpHead, PatchEmbedding, Transformer, check_config, check_images
from vit_layers_flax.typing import Array, Dtype


class DeepViT(nn.Module):
    """ViT whose attention blocks use re-attention (:class:`ReAttention`), with a class token.

    ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    Attributes follow vit-pytorch's ``DeepViT``: ``image_size`` and ``patch_size`` are ints
    (square images and patches only, as in the reference). The class token is always
    prepended; ``pool='mean'`` averages all tokens, class token included, as the reference
    does. The transformer has no final LayerNorm; the head is ``LayerNorm -> Dense``.
    ``dropout`` acts on the attention weights, after the attention and feed-forward
    projections, ``emb_dropout`` after the position embedding, both only when
    ``train=True`` (rng stream ``'dropout'``). ``remat`` rematerialises each block in the
    backward pass. ``dtype`` is the computation dtype, ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
    """

    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    pool: str = "cls"
    channels: int = 3
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        check_config(
            isinstance(self.image_size, int) and isinstance(self.patch_size, int),
            f"DeepViT: image_size and patch_size must be ints (square images and patches, as in the "
            f"reference), received {self.image_size!r} and {self.patch_size!r}",
        )
        check_config(
            min(self.patch_size, self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim) > 0,
            "DeepViT: sizes must be positive",
        )
        check_config(
            self.image_size % self.patch_size == 0,
            f"DeepViT: image_size {self.image_size} must be divisible by patch_size {self.patch_size}",
        )
        check_config(
            self.pool in ("cls", "mean"), f"DeepViT: pool must be 'cls' or 'mean', received {self.pool!r}"
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        size = (self.image_size, self.image_size)
        batch = check_images(img, channels=self.channels, image_size=size, name="DeepViT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = PatchEmbedding(self.dim, (self.patch_size,) * 2, name="to_patch_embedding", **dtypes)(img)
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        pos_embedding = self.param("pos_embedding", init, (1, x.shape[1] + 1, self.dim), self.param_dtype)
        cls_token = self.param("cls_token", init, (1, 1, self.dim), self.param_dtype)

        cls_tokens = repeat(cls_token.astype(x.dtype), "() n d -> b n d", b=batch)
        x = jnp.concatenate([cls_tokens, x], axis=1) + pos_embedding.astype(x.dtype)
        x = nn.Dropout(self.emb_dropout)(x, deterministic=not train)

        x = Transformer(
            self.dim,
            self.depth,
            self.heads,
            self.dim_head,
            self.mlp_dim,
            dropout=self.dropout,
            final_norm=False,
            attention_cls=ReAttention,
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )(x, train=train)

        x = x.mean(axis=1) if self.pool == "mean" else x[:, 0]
        return MlpHead(self.num_classes, name="mlp_head", **dtypes)(x)
