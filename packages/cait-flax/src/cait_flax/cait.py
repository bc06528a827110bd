"""CaiT: "Going deeper with Image Transformers" (Touvron et al., 2021), after vit-pytorch's ``cait.py``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from cait_flax.transformer import LayerScaleTransformer
from vit_layers_flax import MlpHead, PatchEmbedding, check_config, check_images
from vit_layers_flax.typing import Array, Dtype


class CaiT(nn.Module):
    """Class-attention image transformer with LayerScale and talking-heads attention.

    ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    The patch tokens (with a learned position embedding, no class token) go through
    ``depth`` self-attention blocks (``patch_transformer``); then a class token goes through
    ``cls_depth`` class-attention blocks (``cls_transformer``) in which it alone is
    normalised and updated, attending to ``[norm(cls), patch tokens]``; the head reads the
    class token. Every residual branch is scaled by a learned LayerScale.

    Attributes follow vit-pytorch's ``CaiT``; ``image_size`` must be divisible by
    ``patch_size`` (square images, as the reference). ``dropout`` acts in attention and
    feed-forward blocks, ``emb_dropout`` after the position embedding, ``layer_dropout``
    drops whole blocks of each stack (at least one kept per stack) — all three only when
    ``train=True``, with the rng stream ``'dropout'``. Unlike the reference, whose
    ``layer_dropout`` also acts in eval mode, evaluation here is deterministic.
    ``channels`` (3, fixed in the reference) is the number of input channels. ``remat``
    rematerialises each block in the backward pass. ``scan=True`` runs each of the two
    stacks as one ``nn.scan`` (parameters stacked under ``layers`` with a leading depth
    axis, each block keeping its own LayerScale initial value; ``from_vit_pytorch`` fills
    that layout too): the same outputs, and deep stacks compile faster. ``dtype`` is the computation dtype,
    ``param_dtype`` the parameters'.
    """

    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: int
    cls_depth: int
    heads: int
    mlp_dim: int
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    layer_dropout: float = 0.0
    channels: int = 3
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        check_config(
            all(isinstance(s, int) and s > 0 for s in (self.image_size, self.patch_size)),
            f"CaiT: image_size and patch_size must be positive ints, received {self.image_size!r}, {self.patch_size!r}",
        )
        check_config(
            self.image_size % self.patch_size == 0,
            f"CaiT: image_size {self.image_size} must be divisible by patch_size {self.patch_size}",
        )
        check_config(
            min(
                self.num_classes,
                self.dim,
                self.depth,
                self.cls_depth,
                self.heads,
                self.dim_head,
                self.mlp_dim,
                self.channels,
            )
            > 0,
            "CaiT: sizes must be positive",
        )
        check_config(
            0.0 <= self.layer_dropout < 1.0,
            f"CaiT: layer_dropout must be in [0, 1), received {self.layer_dropout}",
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        size = (self.image_size, self.image_size)
        batch = check_images(img, channels=self.channels, image_size=size, name="CaiT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        stack = dict(
            heads=self.heads,
            dim_head=self.dim_head,
            mlp_dim=self.mlp_dim,
            dropout=self.dropout,
            layer_dropout=self.layer_dropout,
            remat=self.remat,
            scan=self.scan,
            **dtypes,
        )

        x = PatchEmbedding(self.dim, (self.patch_size, self.patch_size), name="to_patch_embedding", **dtypes)(
            img
        )
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        pos_embedding = self.param("pos_embedding", init, (x.shape[1], self.dim), self.param_dtype)
        cls_token = self.param("cls_token", init, (1, self.dim), self.param_dtype)

        x = x + pos_embedding.astype(x.dtype)
        x = nn.Dropout(self.emb_dropout)(x, deterministic=not train)
        x = LayerScaleTransformer(self.dim, self.depth, name="patch_transformer", **stack)(x, train=train)

        cls_tokens = repeat(cls_token.astype(x.dtype), "n d -> b n d", b=batch)
        cls_tokens = LayerScaleTransformer(self.dim, self.cls_depth, name="cls_transformer", **stack)(
            cls_tokens, context=x, train=train
        )
        return MlpHead(self.num_classes, name="mlp_head", **dtypes)(cls_tokens[:, 0])
