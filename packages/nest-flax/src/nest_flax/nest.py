"""NesT: "Nested Hierarchical Transformer", after vit-pytorch's ``nest.py``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
from einops import rearrange

from nest_flax.aggregate import Aggregate
from vit_layers_flax import (
    Attention,
    FeatureInfo,
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

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False, return_features: bool = False) -> Any:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        size = x.shape[1:3]
        window = (size[0] // self.grid_size, size[1] // self.grid_size)
        tokens = partition_windows(x, window)
        pos_emb = self.param("pos_emb", nn.initializers.normal(stddev=1.0), (self.seq_len,), self.param_dtype)
        tokens = tokens + pos_emb[: tokens.shape[1], None].astype(tokens.dtype)
        attention = functools.partial(
            Attention, project_out=True, implementation=self.attention_implementation
        )
        block = functools.partial(
            TransformerBlock,
            self.dim,
            self.heads,
            self.dim // self.heads,
            self.dim * self.mlp_mult,
            dropout=self.dropout,
            attention=attention,
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
        out = Aggregate(self.dim_out, name="aggregate", **dtypes)(x)
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
        tokens, i.e. ``(height / side) * (width / side) <= seq_len`` with that side."""
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
        side = self.input_sizes().step
        _, height, width, _ = check_images(img, channels=self.channels, multiple_of=(side, side), name="NesT")
        if (height // side) * (width // side) > self.seq_len:
            # a block would outgrow the position embedding; name the configured size
            check_images(img, channels=self.channels, image_size=(self.image_size,) * 2, name="NesT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = PatchEmbedding(self.dim, (self.patch_size,) * 2, name="to_patch_embedding", **dtypes)(img)
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
                name=f"stages_{i}",
                **dtypes,
            )(x, train=train, return_features=return_features)
            if return_features:
                x, fmap = x
                features.append(fmap)
        if return_features:
            return self.select_features(features)
        # the reference's mlp_head: LayerNorm on every position, the spatial mean, Linear
        x = LayerNorm(name="norm", **dtypes)(x).mean(axis=(1, 2))
        return self.classify(x, pre_logits=pre_logits, name="head")
