"""NesT: "Nested Hierarchical Transformer" (Zhang et al., 2022), after vit-pytorch's ``nest.py``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from nest_flax.aggregate import Aggregate
from nest_flax.blocks import merge_blocks, partition_blocks
from nest_flax.head import PooledHead
from nest_flax.transformer import LocalTransformer
from vit_layers_flax import PatchEmbedding, cast_tuple, check_config, check_images
from vit_layers_flax.typing import Array, Dtype


class Hierarchy(nn.Module):
    """One level of the nest: blocks -> local transformer -> merged map -> aggregation.

    ``(batch, H, W, dim) -> (batch, ceil(H / 2), ceil(W / 2), dim_out)``, or
    ``(batch, H, W, dim)`` when ``dim_out`` is ``None`` (the top level, which the reference
    closes with ``nn.Identity``). The map is cut into a ``block_size x block_size`` grid
    (:func:`~nest_flax.blocks.partition_blocks`), every block runs through the same
    :class:`~nest_flax.transformer.LocalTransformer` (``transformer``), the blocks are
    put back together and :class:`~nest_flax.aggregate.Aggregate` (``aggregate``) halves the
    map, so neighbouring blocks communicate.
    """

    dim: int
    dim_out: int | None
    block_size: int
    seq_len: int
    depth: int
    heads: int
    mlp_mult: int
    dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_height = x.shape[1] // self.block_size
        tokens = partition_blocks(x, self.block_size)
        tokens = LocalTransformer(
            self.dim,
            self.seq_len,
            self.depth,
            self.heads,
            self.mlp_mult,
            dropout=self.dropout,
            remat=self.remat,
            scan=self.scan,
            attention_implementation=self.attention_implementation,
            name="transformer",
            **dtypes,
        )(tokens, train=train)
        x = merge_blocks(tokens, self.block_size, block_height)
        if self.dim_out is None:
            return x
        return Aggregate(self.dim_out, name="aggregate", **dtypes)(x)


class NesT(nn.Module):
    """Nested hierarchical transformer: local transformers on blocks, aggregated level by level.

    ``(batch, height, width, channels) -> (batch, num_classes)``.

    Attributes follow vit-pytorch's ``NesT``. The image is cut into ``patch_size`` patches
    embedded to ``dim`` (LayerNorm, Linear, LayerNorm), giving an ``image_size / patch_size``
    square map. Level ``i`` of ``num_hierarchies`` (``layers_{i}``, a :class:`Hierarchy`)
    splits the map into a ``2 ** (num_hierarchies - 1 - i)``-sided grid of blocks, runs
    ``block_repeats[i]`` transformer blocks of width ``dim * 2 ** i`` with ``heads * 2 ** i``
    heads inside every block, and (but the last level) aggregates to twice the width and
    half the side. Every block holds the same ``seq_len = (image_size / patch_size /
    2 ** (num_hierarchies - 1)) ** 2`` tokens at every level. The head normalises every
    position, averages them and classifies. ``dim_head`` is accepted for compatibility and
    unused, as in the reference (each head is ``dim // heads`` wide at every level).

    Images need not be ``image_size``: as in the reference, any height and width that are
    multiples of ``patch_size * 2 ** (num_hierarchies - 1)`` are taken, provided a block
    holds at most ``seq_len`` tokens (those use the first entries of each level's position
    embedding).

    ``dropout`` acts in attention and feed-forward blocks only when ``train=True`` (rng
    stream ``'dropout'``). ``remat`` rematerialises each transformer block in the backward
    pass (less activation memory, same results). ``attention_implementation`` is passed to
    :func:`jax.nn.dot_product_attention` (``None``, ``'xla'`` or ``'cudnn'``). ``dtype`` is
    the computation dtype, ``param_dtype`` the parameters'.

    ``scan=True`` runs each stack of identical blocks as one ``nn.scan`` (their parameters
    stacked under ``layers`` with a leading depth axis; ``from_vit_pytorch`` fills that layout
    too): the same outputs, and deep configurations compile faster.
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
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @property
    def grid_size(self) -> int:
        """The side of the block grid at the bottom level: ``2 ** (num_hierarchies - 1)``."""
        return 2 ** (self.num_hierarchies - 1)

    @property
    def seq_len(self) -> int:
        """Tokens per block (and length of every level's position embedding)."""
        return (self.image_size // self.patch_size // self.grid_size) ** 2

    def __post_init__(self):
        check_config(
            all(isinstance(v, int) for v in (self.image_size, self.patch_size)),
            f"NesT: image_size and patch_size must be ints (square images), received "
            f"{self.image_size!r} and {self.patch_size!r}",
        )
        check_config(
            min(self.image_size, self.patch_size, self.num_classes, self.dim, self.heads, self.mlp_mult) > 0
            and self.channels > 0,
            "NesT: sizes must be positive",
        )
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

    @nn.compact
    def __call__(self, img: Array, *, train: bool = False) -> Array:
        unit = self.patch_size * self.grid_size
        _, height, width, _ = check_images(img, channels=self.channels, multiple_of=(unit, unit), name="NesT")
        if (height // unit) * (width // unit) > self.seq_len:
            # a block would outgrow the position embedding; name the configured size
            check_images(img, channels=self.channels, image_size=(self.image_size,) * 2, name="NesT")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = PatchEmbedding(self.dim, (self.patch_size,) * 2, name="to_patch_embedding", **dtypes)(img)
        x = rearrange(x, "b (h w) d -> b h w d", h=height // self.patch_size)

        repeats = cast_tuple(self.block_repeats, self.num_hierarchies)
        for i, depth in enumerate(repeats):
            is_last = i == self.num_hierarchies - 1
            x = Hierarchy(
                self.dim * 2**i,
                None if is_last else self.dim * 2 ** (i + 1),
                block_size=2 ** (self.num_hierarchies - 1 - i),
                seq_len=self.seq_len,
                depth=depth,
                heads=self.heads * 2**i,
                mlp_mult=self.mlp_mult,
                dropout=self.dropout,
                remat=self.remat,
                scan=self.scan,
                attention_implementation=self.attention_implementation,
                name=f"layers_{i}",
                **dtypes,
            )(x, train=train)
        return PooledHead(self.num_classes, name="mlp_head", **dtypes)(x)
