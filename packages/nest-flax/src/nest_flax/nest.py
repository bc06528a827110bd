"""NesT: "Nested Hierarchical Transformer", after vit-pytorch's ``nest.py``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
from einops import rearrange

from nest_flax.aggregate import POOL_PADDINGS, Aggregate
from vit_layers_flax import (
    Attention,
    FeatureInfo,
    FeedForward,
    ImageClassifier,
    InputSizes,
    LayerNorm,
    Model,
    PatchEmbedding,
    Transformer,
    TransformerBlock,
    cast_tuple,
    check_config,
    check_images,
    merge_windows,
    partition_windows,
)
from vit_layers_flax.typing import Array


class Hierarchy(Model):
    """One level of the nest: a transformer inside every block of a ``grid_size``-sided grid,
    then, unless ``dim_out`` is ``None`` (the top level), aggregation.

    ``(batch, H, W, dim) -> (batch, ceil(H / 2), ceil(W / 2), dim_out)``, or unchanged at the
    top. Every block (:func:`~vit_layers_flax.partition_windows`) gets ``pos_emb``, one scalar
    per position (``(seq_len,)``; a smaller block uses the first entries, as the reference),
    and the ``transformer``: ``depth`` shared :class:`~vit_layers_flax.TransformerBlock` s with
    heads ``dim // heads`` wide, ``to_out`` even for one head, no final norm. ``aggregate``
    (:class:`Aggregate`) halves the merged map, so that neighbouring blocks communicate.
    ``return_features``: ``(x, map)``, ``map`` the merged blocks before aggregation.

    ``pos_emb_per_block`` makes ``pos_emb`` ``(grid_size ** 2, seq_len, dim)``, a vector per
    position of every block (the original NesT's, timm's): blocks must then hold exactly
    ``seq_len`` tokens. ``qkv_bias`` and ``norm_epsilon`` go to the blocks (and the
    aggregation's LayerNorm), ``pool_padding`` to :class:`Aggregate`.
    """

    dim: int
    dim_out: int | None
    grid_size: int
    seq_len: int
    depth: int
    heads: int
    mlp_mult: int
    dropout: float = 0.0
    attention_implementation: str | None = None
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    pos_emb_per_block: bool = False
    pool_padding: str = "symmetric"

    def _add_position(self, tokens: Array) -> Array:
        """``pos_emb`` added to every block's tokens ``(batch * blocks, n, dim)``."""
        if not self.pos_emb_per_block:
            shape = (self.seq_len,)
            pos_emb = self.param("pos_emb", nn.initializers.normal(stddev=1.0), shape, self.param_dtype)
            return tokens + pos_emb[: tokens.shape[1], None].astype(tokens.dtype)
        blocks = self.grid_size**2
        if tokens.shape[1:] != (self.seq_len, self.dim):
            raise ValueError(
                f"Hierarchy: with pos_emb_per_block, expected blocks of {self.seq_len} tokens of width "
                f"{self.dim}, received {tokens.shape[1]} tokens of width {tokens.shape[2]}"
            )
        shape = (blocks, self.seq_len, self.dim)
        pos_emb = self.param("pos_emb", nn.initializers.truncated_normal(0.02), shape, self.param_dtype)
        tokens = tokens.reshape(-1, *shape) + pos_emb.astype(tokens.dtype)
        return tokens.reshape(-1, *shape[1:])

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, return_features: bool = False) -> Any:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        size = x.shape[1:3]
        window = (size[0] // self.grid_size, size[1] // self.grid_size)
        tokens = self._add_position(partition_windows(x, window))
        attention = functools.partial(
            Attention,
            project_out=True,
            implementation=self.attention_implementation,
            qkv_bias=self.qkv_bias,
            norm_epsilon=self.norm_epsilon,
        )
        block = functools.partial(
            TransformerBlock,
            self.dim,
            self.heads,
            self.dim // self.heads,
            self.dim * self.mlp_mult,
            dropout=self.dropout,
            attention=attention,
            feed_forward=functools.partial(FeedForward, norm_epsilon=self.norm_epsilon),
            **dtypes,
        )
        transformer = Transformer(
            self.depth,
            block,
            final_norm=False,
            remat=self.remat,
            scan=self.scan,
            name="transformer",
            **dtypes,
        )
        x = merge_windows(transformer(tokens, train=train), window, size)
        if self.dim_out is None:
            return (x, x) if return_features else x
        out = Aggregate(self.dim_out, self.norm_epsilon, self.pool_padding, name="aggregate", **dtypes)(x)
        return (out, x) if return_features else out


class NesT(ImageClassifier):
    """NesT (Zhang et al., AAAI 2022, arXiv:2105.12723): local transformers on image blocks,
    aggregated level by level. Feature maps: each level's map, before its aggregation.

    Patches of ``patch_size`` are embedded to ``dim``; level ``i`` (``stages_{i}``, a
    :class:`Hierarchy`) runs ``block_repeats[i]`` blocks of width ``dim * 2 ** i`` with
    ``heads * 2 ** i`` heads inside each block of a ``2 ** (num_hierarchies - 1 - i)``-sided
    grid; every block holds :attr:`seq_len` tokens. The top map is normalised per position
    (``norm``), averaged and classified (``head``). ``dim_head`` is unused, as in the reference.
    Images of other sizes are taken too (:meth:`input_sizes`) while a block holds at most
    ``seq_len`` tokens.

    The original architecture (Google's JAX NesT, timm's ``Nest``; the pretrained presets)
    differs in options whose defaults keep vit-pytorch's: ``patch_norms=False`` (the patch
    projection alone, no LayerNorm before or after it), ``qkv_bias=True``, ``norm_epsilon=1e-6``
    (every LayerNorm), ``pos_emb_per_block=True`` (each level's position embedding a vector per
    position of every block, ``(blocks, seq_len, dim)``: the images must then be
    ``image_size``) and ``pool_padding="same"`` (the aggregation's max-pool padded as TF's
    ``'SAME'``; timm's ``nest_*_jx``, the converted weights).
    """

    image_size: int
    patch_size: int
    num_classes: int
    dim: int
    heads: int
    num_hierarchies: int
    block_repeats: int | Sequence[int]
    mlp_mult: int = 4
    channels: int = 3
    dim_head: int = 64
    dropout: float = 0.0
    attention_implementation: str | None = None
    patch_norms: bool = True
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    pos_emb_per_block: bool = False
    pool_padding: str = "symmetric"

    @property
    def grid_size(self) -> int:
        """The side of the block grid at the bottom level: ``2 ** (num_hierarchies - 1)``."""
        return 2 ** (self.num_hierarchies - 1)

    @property
    def seq_len(self) -> int:
        """Tokens per block (and length of every level's position embedding)."""
        return (self.image_size // self.patch_size // self.grid_size) ** 2

    def input_sizes(self) -> InputSizes:
        """Heights and widths that split into the bottom grid of blocks of whole patches,
        multiples of ``patch_size * grid_size``; a block must also hold at most :attr:`seq_len`
        tokens, i.e. ``(height / side) * (width / side) <= seq_len`` with that side. With
        ``pos_emb_per_block``: ``image_size`` only."""
        if self.pos_emb_per_block:
            return InputSizes.fixed(self.image_size)
        side = self.patch_size * self.grid_size
        return InputSizes(side, side)

    def __post_init__(self):
        check_config(
            all(isinstance(v, int) for v in (self.image_size, self.patch_size)),
            f"NesT: image_size and patch_size must be ints (square images), received "
            f"{self.image_size!r} and {self.patch_size!r}",
        )
        check_config(
            min(self.image_size, self.patch_size, self.dim, self.heads, self.mlp_mult) > 0
            and self.channels > 0,
            "NesT: sizes must be positive",
        )
        check_config(self.num_classes >= 0, f"NesT: num_classes must be >= 0, received {self.num_classes}")
        check_config(
            self.image_size % self.patch_size == 0,
            f"NesT: image_size {self.image_size} must be divisible by patch_size {self.patch_size}",
        )
        check_config(
            self.num_hierarchies >= 1, f"NesT: num_hierarchies must be >= 1, got {self.num_hierarchies}"
        )
        fmap_size = self.image_size // self.patch_size
        check_config(
            fmap_size % self.grid_size == 0,
            f"NesT: the {fmap_size} x {fmap_size} patch map (image_size // patch_size) cannot be split into "
            f"a {self.grid_size} x {self.grid_size} block grid (2 ** (num_hierarchies - 1))",
        )
        check_config(
            self.dim >= self.heads,
            f"NesT: dim {self.dim} must be at least heads {self.heads} (dim // heads > 0)",
        )
        repeats = cast_tuple(self.block_repeats, self.num_hierarchies)  # raises on a wrong length
        check_config(min(repeats) >= 0, f"NesT: block_repeats must be >= 0, received {self.block_repeats!r}")
        check_config(
            self.pool_padding in POOL_PADDINGS,
            f"NesT: pool_padding must be one of {POOL_PADDINGS}, received {self.pool_padding!r}",
        )
        super().__post_init__()

    @property
    def num_features(self) -> int:
        return self.dim * 2 ** (self.num_hierarchies - 1)

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Level ``i``'s map after its transformer, before its aggregation: ``dim * 2 ** i``
        channels, reduction ``patch_size * 2 ** i``."""
        return tuple(
            FeatureInfo(self.dim * 2**i, (self.patch_size * 2**i,) * 2, f"stages_{i}/transformer")
            for i in range(self.num_hierarchies)
        )

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        side = self.patch_size * self.grid_size
        _, height, width, _ = check_images(img, channels=self.channels, multiple_of=(side, side), name="NesT")
        if self.pos_emb_per_block or (height // side) * (width // side) > self.seq_len:
            # a block would outgrow (or, per block, not fit) the position embedding
            check_images(img, channels=self.channels, image_size=(self.image_size,) * 2, name="NesT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = PatchEmbedding(
            self.dim, (self.patch_size,) * 2, norms=self.patch_norms, name="to_patch_embedding", **dtypes
        )(img)
        x = rearrange(x, "b (h w) d -> b h w d", h=height // self.patch_size)

        repeats, features = cast_tuple(self.block_repeats, self.num_hierarchies), []
        for i, depth in enumerate(repeats):
            is_last = i == self.num_hierarchies - 1
            x = Hierarchy(
                self.dim * 2**i,
                None if is_last else self.dim * 2 ** (i + 1),
                grid_size=2 ** (self.num_hierarchies - 1 - i),
                seq_len=self.seq_len,
                depth=depth,
                heads=self.heads * 2**i,
                mlp_mult=self.mlp_mult,
                dropout=self.dropout,
                remat=self.remat,
                scan=self.scan,
                attention_implementation=self.attention_implementation,
                qkv_bias=self.qkv_bias,
                norm_epsilon=self.norm_epsilon,
                pos_emb_per_block=self.pos_emb_per_block,
                pool_padding=self.pool_padding,
                name=f"stages_{i}",
                **dtypes,
            )(x, train=train, return_features=return_features)
            if return_features:
                x, fmap = x
                features.append(fmap)
        if return_features:
            return self.select_features(features)
        # the reference's mlp_head: LayerNorm on every position, the spatial mean, Linear
        x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dtypes)(x).mean(axis=(1, 2))
        return self.classify(x, pre_logits=pre_logits, name="head")
