"""T2T-ViT: "Tokens-to-Token ViT" (Yuan et al., 2021), after vit-pytorch's ``t2t.py``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from einops import repeat

from t2t_vit_flax.tokens_to_token import TokensToToken
from vit_layers_flax import Transformer, check_config, check_images, unfold_output_size
from vit_layers_flax.typing import Array, Dtype


class T2TViT(nn.Module):
    """Vision Transformer on tokens made by progressive soft splits (tokens-to-token).

    ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    Attributes follow vit-pytorch's ``T2TViT``. ``t2t_layers`` lists ``(kernel_size, stride)``
    of the soft splits (:class:`~t2t_vit_flax.tokens_to_token.TokensToToken`); a class token
    and a learned position embedding are added, then ``transformer`` (by default the shared
    :class:`~vit_layers_flax.Transformer` built from ``depth``, ``heads``, ``dim_head``,
    ``mlp_dim``, ``dropout``; or any Flax module called as ``transformer(x, train=train)``
    on ``(batch, tokens, dim)``) and the head on the class token (``pool='cls'``) or the mean
    of all tokens, the class token included (``pool='mean'``). Images are square.
    ``dropout`` acts in every transformer, ``emb_dropout`` after the position embedding,
    both only when ``train=True`` (rng stream ``'dropout'``). ``remat`` rematerialises each
    block of the default transformer in the backward pass (a custom ``transformer`` brings
    its own). ``dtype`` is the computation dtype, ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
    """

    image_size: int
    num_classes: int
    dim: int
    depth: int | None = None
    heads: int | None = None
    mlp_dim: int | None = None
    pool: str = "cls"
    channels: int = 3
    dim_head: int = 64
    dropout: float = 0.0
    emb_dropout: float = 0.0
    transformer: nn.Module | None = None
    t2t_layers: Sequence[tuple[int, int]] = ((7, 4), (3, 2), (3, 2))
    attention_implementation: str | None = None
    remat: bool = False
    scan: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @property
    def output_image_size(self) -> int:
        """The side of the token grid after the last soft split."""
        size = self.image_size
        for kernel_size, stride in self.t2t_layers:
            size = unfold_output_size(size, kernel_size, stride, stride // 2)
        return size

    def __post_init__(self):
        check_config(
            isinstance(self.image_size, int) and self.image_size > 0,
            f"T2TViT: image_size must be a positive int (square images), received {self.image_size!r}",
        )
        check_config(
            self.pool in ("cls", "mean"), f"T2TViT: pool must be 'cls' or 'mean', received {self.pool!r}"
        )
        check_config(
            len(self.t2t_layers) > 0, "T2TViT: t2t_layers must hold at least one (kernel_size, stride)"
        )
        check_config(
            all(len(layer) == 2 and min(layer) > 0 for layer in self.t2t_layers),
            f"T2TViT: t2t_layers must be positive (kernel_size, stride) pairs, received {self.t2t_layers!r}",
        )
        check_config(
            isinstance(self.image_size, int) and self.output_image_size > 0,
            f"T2TViT: image_size {self.image_size} is too small for t2t_layers {self.t2t_layers!r}",
        )
        check_config(
            min(self.dim, self.num_classes, self.dim_head, self.channels) > 0,
            "T2TViT: sizes must be positive",
        )
        if self.transformer is None:
            check_config(
                None not in (self.depth, self.heads, self.mlp_dim),
                "T2TViT: depth, heads, and mlp_dim must be supplied (or a transformer)",
            )
            check_config(min(self.depth, self.heads, self.mlp_dim) > 0, "T2TViT: sizes must be positive")
        super().__post_init__()

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        size = (self.image_size, self.image_size)
        batch = check_images(img, channels=self.channels, image_size=size, name="T2TViT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = TokensToToken(
            self.dim, tuple(self.t2t_layers), self.channels, self.dropout, name="to_patch_embedding", **dtypes
        )(img, train=train)
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        cls_token = self.param("cls_token", init, (1, self.dim), self.param_dtype)
        pos_embedding = self.param("pos_embedding", init, (x.shape[1] + 1, self.dim), self.param_dtype)
        cls_tokens = repeat(cls_token.astype(x.dtype), "n d -> b n d", b=batch)
        x = jnp.concatenate([cls_tokens, x], axis=1) + pos_embedding.astype(x.dtype)
        x = nn.Dropout(self.emb_dropout)(x, deterministic=not train)

        if self.transformer is not None:
            x = self.transformer(x, train=train)
        else:
            x = Transformer(
                self.dim,
                self.depth,
                self.heads,
                self.dim_head,
                self.mlp_dim,
                dropout=self.dropout,
                attention_kwargs={"implementation": self.attention_implementation},
                remat=self.remat,
                scan=self.scan,
                name="transformer",
                **dtypes,
            )(x, train=train)
        x = x.mean(axis=1) if self.pool == "mean" else x[:, 0]
        return nn.Dense(self.num_classes, name="mlp_head", **dtypes)(x)
