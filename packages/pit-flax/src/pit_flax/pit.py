"""PiT: "Rethinking Spatial Dimensions of Vision Transformers" (Heo et al., 2021), after vit-pytorch's ``pit.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from pit_flax.pool import Pool
from vit_layers_flax import (
    Dense,
    MlpHead,
    Transformer,
    check_config,
    check_images,
    unfold,
    unfold_output_size,
)
from vit_layers_flax.typing import Array, Dtype


class Stage(NamedTuple):
    """One transformer stage: its token width, number of blocks and heads."""

    dim: int
    depth: int
    heads: int


class PiT(nn.Module):
    """Pooling-based Vision Transformer: a ViT whose token grid shrinks between stages.

    ``(batch, image_size, image_size, channels) -> (batch, num_classes)``; images are square.

    Attributes follow vit-pytorch's ``PiT``. The image is cut into overlapping
    ``patch_size`` patches with stride ``patch_size // 2`` (:func:`vit_layers_flax.unfold`,
    features in torch's ``(c kh kw)`` order) and projected to ``dim``; a class token and a
    learned position embedding are added. ``depth`` is a tuple with the number of blocks of
    each stage; ``heads`` is an int or a tuple with one entry per stage. Between stages a
    :class:`~pit_flax.pool.Pool` halves the token grid (rounding up) and doubles the width,
    so stage ``i`` is ``dim * 2**i`` wide; ``dim_head`` and ``mlp_dim`` stay the same in
    every stage. The head (LayerNorm -> Dense) reads the class token.

    Parameters mirror the reference's ``nn.Sequential`` ``layers``: ``layers_{2i}`` is
    stage ``i``'s :class:`~vit_layers_flax.Transformer` (no final LayerNorm, as in the
    reference), ``layers_{2i+1}`` the pool after it. ``dropout`` acts in attention and
    feed-forward blocks, ``emb_dropout`` after the position embedding, both only when
    ``train=True`` (rng stream ``'dropout'``). ``remat`` rematerialises each block in the
    backward pass; ``attention_implementation`` is passed to
    :func:`jax.nn.dot_product_attention` (``None``, ``'xla'`` or ``'cudnn'``). ``dtype``
    is the computation dtype, ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
    """

    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    depth: Sequence[int]
    heads: int | Sequence[int]
    mlp_dim: int
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    channels: int = 3
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @property
    def stages(self) -> list[Stage]:
        """``Stage(dim, depth, heads)`` of each stage, widths doubling after every pool."""
        depth = tuple(self.depth)
        heads = tuple(self.heads) if isinstance(self.heads, (tuple, list)) else (self.heads,) * len(depth)
        return [Stage(self.dim * 2**i, d, h) for i, (d, h) in enumerate(zip(depth, heads, strict=True))]

    @property
    def num_patches(self) -> int:
        """Tokens after the patch embedding: the overlapping patches' grid, squared."""
        return unfold_output_size(self.image_size, self.patch_size, self.patch_size // 2) ** 2

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
            min(*self.depth, *(self.heads if isinstance(self.heads, (tuple, list)) else (self.heads,))) > 0
            and min(self.dim, self.mlp_dim, self.dim_head, self.num_classes, self.channels) > 0,
            "PiT: sizes must be positive",
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        size = (self.image_size, self.image_size)
        batch = check_images(img, channels=self.channels, image_size=size, name="PiT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = unfold(img, self.patch_size, self.patch_size // 2)  # (batch, num_patches, c * p * p)
        x = Dense(self.dim, name="to_patch_embedding", **dtypes)(x)
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        cls_token = self.param("cls_token", init, (1, self.dim), self.param_dtype)
        pos_embedding = self.param("pos_embedding", init, (self.num_patches + 1, self.dim), self.param_dtype)
        cls_tokens = repeat(cls_token.astype(x.dtype), "n d -> b n d", b=batch)
        x = jnp.concatenate([cls_tokens, x], axis=1) + pos_embedding.astype(x.dtype)
        x = nn.Dropout(self.emb_dropout)(x, deterministic=not train)

        stages = self.stages
        for i, stage in enumerate(stages):
            x = Transformer(
                stage.dim,
                stage.depth,
                stage.heads,
                self.dim_head,
                self.mlp_dim,
                dropout=self.dropout,
                final_norm=False,
                remat=self.remat,
                scan=self.scan,
                attention_kwargs={"implementation": self.attention_implementation},
                name=f"layers_{2 * i}",
                **dtypes,
            )(x, train=train)
            if i < len(stages) - 1:
                x = Pool(stage.dim, name=f"layers_{2 * i + 1}", **dtypes)(x)

        return MlpHead(self.num_classes, name="mlp_head", **dtypes)(x[:, 0])
