"""CaiT, after vit-pytorch's ``cait.py``."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from cait_flax.talking_heads import TalkingHeadsAttention
from cait_flax.transformer import LayerScaleTransformer
from vit_layers_flax import (
    ClassifierHead,
    FeatureInfo,
    FeedForward,
    ImageClassifier,
    InputSizes,
    PatchEmbedding,
    TokenEmbedding,
    block_features,
    check_config,
    check_images,
    pool_tokens,
    token_map,
)
from vit_layers_flax.typing import Array


class CaiT(ImageClassifier):
    """Class-attention image transformer: ``(batch, image_size, image_size, channels) -> (batch, num_classes)``.

    Touvron, Cord, Sablayrolles, Synnaeve, Jégou, "Going deeper with Image Transformers",
    ICCV 2021 (arXiv:2103.17239). The patch tokens (position embedding, no class token) go
    through ``depth`` LayerScale'd talking-heads blocks (``patch_transformer``); a class
    token then goes through ``cls_depth`` class-attention blocks (``cls_transformer``)
    attending to ``[norm(cls), patches]``, and the head reads it. Feature maps: the patch
    grid after each ``patch_transformer`` block. Arguments are vit-pytorch's (square images);
    ``layer_dropout`` drops whole blocks of each stack in training only (at least one kept
    per stack; the reference also drops them in evaluation). ``channels``: input channels.

    The defaults are vit-pytorch's architecture. The paper's (its code's and timm's: the
    pretrained presets) is ``patch_norms=False`` (no LayerNorm before and after the patch
    projection), ``qkv_bias=True`` (biases on the query, key and value projections),
    ``norm_epsilon=1e-6`` (every LayerNorm), ``talking_heads_bias=True`` (a bias after each
    head-mixing matrix), ``cls_talking_heads=False`` (plain multi-head class attention),
    ``cls_norm_context=True`` (the class-attention blocks normalise the patch tokens they
    read, with the class token's LayerNorm) and ``layer_scale_init`` (one initial LayerScale
    for every block, ``1e-5`` or ``1e-6``; ``None``: vit-pytorch's rule by block number,
    :func:`~cait_flax.initial_layer_scale`). The last changes initialisation only.
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
    patch_norms: bool = True
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    talking_heads_bias: bool = False
    cls_talking_heads: bool = True
    cls_norm_context: bool = False
    layer_scale_init: float | None = None

    def __post_init__(self):
        check_config(
            all(isinstance(s, int) and s > 0 for s in (self.image_size, self.patch_size)),
            f"CaiT: image_size and patch_size must be positive ints, received {self.image_size!r}, {self.patch_size!r}",
        )
        check_config(
            self.image_size % self.patch_size == 0,
            f"CaiT: image_size {self.image_size} must be divisible by patch_size {self.patch_size}",
        )
        sizes = (self.dim, self.depth, self.cls_depth, self.heads, self.dim_head)
        check_config(min(*sizes, self.mlp_dim, self.channels) > 0, "CaiT: sizes must be positive")
        check_config(self.num_classes >= 0, f"CaiT: num_classes must be >= 0, received {self.num_classes}")
        check_config(
            self.layer_scale_init is None or self.layer_scale_init >= 0,
            f"CaiT: layer_scale_init must be None or >= 0, received {self.layer_scale_init}",
        )
        check_config(
            0.0 <= self.layer_dropout < 1.0,
            f"CaiT: layer_dropout must be in [0, 1), received {self.layer_dropout}",
        )
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        return InputSizes(self.image_size)

    @property
    def num_features(self) -> int:
        return self.dim

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        return block_features(self.dim, self.patch_size, self.depth, "patch_transformer")

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        size = (self.image_size, self.image_size)
        batch = check_images(img, channels=self.channels, image_size=size, name="CaiT")[0]
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        eps = self.norm_epsilon
        stack = dict(
            heads=self.heads,
            dim_head=self.dim_head,
            mlp_dim=self.mlp_dim,
            dropout=self.dropout,
            layer_dropout=self.layer_dropout,
            layer_scale_init=self.layer_scale_init,
            feed_forward=functools.partial(FeedForward, norm_epsilon=eps),
            remat=self.remat,
            scan=self.scan,
            **dtypes,
        )
        attention = functools.partial(TalkingHeadsAttention, qkv_bias=self.qkv_bias, norm_epsilon=eps)
        patch_attention = functools.partial(attention, mix_bias=self.talking_heads_bias)
        cls_attention = functools.partial(
            attention,
            talking_heads=self.cls_talking_heads,
            mix_bias=self.talking_heads_bias,
            norm_context=self.cls_norm_context,
        )

        patches = (self.patch_size, self.patch_size)
        x = PatchEmbedding(self.dim, patches, norms=self.patch_norms, name="to_patch_embedding", **dtypes)(
            img
        )
        x = TokenEmbedding(0, self.emb_dropout, param_dtype=self.param_dtype, name="embedding")(
            x, train=train
        )
        patch_transformer = LayerScaleTransformer(
            self.dim, self.depth, attention=patch_attention, name="patch_transformer", **stack
        )
        if return_features:
            grid = (self.image_size // self.patch_size,) * 2
            _, blocks = patch_transformer(x, train=train, return_features=True)
            return self.select_features([token_map(b, grid) for b in blocks])
        x = patch_transformer(x, train=train)

        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        cls_token = self.param("cls_token", init, (1, self.dim), self.param_dtype)
        cls_tokens = jnp.broadcast_to(cls_token.astype(x.dtype), (batch, 1, self.dim))
        cls_transformer = LayerScaleTransformer(
            self.dim, self.cls_depth, attention=cls_attention, name="cls_transformer", **stack
        )
        cls_tokens = cls_transformer(cls_tokens, x, train=train)
        head = ClassifierHead(self.num_classes, norm_epsilon=eps, name="mlp_head", **dtypes)
        return head(pool_tokens(cls_tokens, "cls"), pre_logits=pre_logits)
