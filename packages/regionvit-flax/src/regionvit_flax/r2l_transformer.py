"""The regional-to-local transformer: regional self-attention, then local windows with their regional token."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from regionvit_flax.position_bias import local_rel_pos_indices
from regionvit_flax.windows import merge_windows, partition_windows
from vit_layers_flax import Attention, FeedForward, apply_blocks
from vit_layers_flax.typing import Array, Dtype


class R2LBlock(nn.Module):
    """One layer of the reference's ``R2LTransformer``, on windows with their regional token first.

    ``(batch * num_regions, 1 + window_tokens, dim) -> (same)``, ``bias: (1, heads, 1 +
    window_tokens, 1 + window_tokens)``. The ONE attention module ``attn`` is used twice, as in
    the reference: first regional self-attention over the ``num_regions`` regional tokens of each
    image (no bias), then local self-attention inside every window, the regional token prepended
    (its row and column of ``bias`` are zero). Both are residual; then the feed-forward ``ff``
    (residual) on every token, regional and local.
    """

    dim: int
    num_regions: int
    heads: int = 4
    dim_head: int = 32
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: Array, bias: Array, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = Attention(
            self.dim,
            heads=self.heads,
            dim_head=self.dim_head,
            dropout=self.attn_dropout,
            implementation=self.attention_implementation,
            name="attn",
            **dtypes,
        )
        # regional self-attention: the regional tokens of one image attend to each other
        region = rearrange(tokens[:, :1], "(b n) 1 d -> b n d", n=self.num_regions)
        region = attn(region, train=train) + region
        tokens = jnp.concatenate([rearrange(region, "b n d -> (b n) 1 d"), tokens[:, 1:]], axis=1)
        # local self-attention in each window, with its regional token, by the same module
        tokens = attn(tokens, bias, train=train) + tokens
        # the reference's feed-forward ends with its second Linear: no output dropout
        ff = FeedForward(
            self.dim, 4 * self.dim, dropout=self.ff_dropout, output_dropout=False, name="ff", **dtypes
        )
        return ff(tokens, train=train) + tokens


class R2LTransformer(nn.Module):
    """vit-pytorch's ``regionvit.R2LTransformer``: ``depth`` :class:`R2LBlock` s (``layers_{i}``).

    ``local_tokens: (batch, rh * wh, rw * ww, dim)``, ``region_tokens: (batch, rh, rw, dim)``
    ``-> (local_tokens, region_tokens)`` of the same shapes. Each regional token owns the
    ``wh x ww`` window of local tokens under it (``wh = lh // rh``, ``ww = lw // rw``, at most
    ``window_size``). The local windows' relative position bias is the parameter
    ``local_rel_pos_bias`` (``((2 * window_size - 1) ** 2, heads)``, the reference's
    ``nn.Embedding``), looked up ONCE per call into one ``(1, heads, 1 + wh * ww, 1 + wh * ww)``
    tensor, zero for the regional token, shared by every window and every layer. Windows are
    partitioned once before the layers and merged once after: the reference's per-layer
    round trip through the ``(b, (h w), d)`` layout is the identity. ``remat=True``
    rematerialises each layer in the backward pass; ``scan=True`` runs the layers as one
    ``nn.scan`` (parameters stacked under ``layers``).
    """

    dim: int
    window_size: int
    depth: int = 4
    heads: int = 4
    dim_head: int = 32
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    remat: bool = False
    scan: bool = False
    attention_implementation: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, local_tokens: Array, region_tokens: Array, *, train: bool = False
    ) -> tuple[Array, Array]:
        (lh, lw), (rh, rw) = local_tokens.shape[1:3], region_tokens.shape[1:3]
        window = (lh // rh, lw // rw)
        table = self.param(
            "local_rel_pos_bias",
            nn.initializers.normal(stddev=1.0),  # torch's nn.Embedding init
            ((2 * self.window_size - 1) ** 2, self.heads),
            self.param_dtype,
        )
        bias = rearrange(table[local_rel_pos_indices(window, self.window_size)], "i j h -> 1 h i j")
        bias = jnp.pad(bias, ((0, 0), (0, 0), (1, 0), (1, 0)))  # zero bias to and from the regional token

        tokens = partition_windows(local_tokens, region_tokens)
        block_cls = R2LBlock
        if self.remat:  # (self, tokens, bias, train)
            block_cls = nn.remat(block_cls, static_argnums=(3,), prevent_cse=not self.scan)
        tokens = apply_blocks(
            lambda name: block_cls(
                self.dim,
                rh * rw,
                heads=self.heads,
                dim_head=self.dim_head,
                attn_dropout=self.attn_dropout,
                ff_dropout=self.ff_dropout,
                attention_implementation=self.attention_implementation,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            ),
            self.depth,
            tokens,
            bias,
            train=train,
            scan=self.scan,
        )
        return merge_windows(tokens, (rh, rw), window)
