"""One Twins-SVT block: local attention, feed-forward, global attention, feed-forward."""

from __future__ import annotations

import flax.linen as nn

from twins_svt_flax.attention import GlobalAttention, LocalAttention
from vit_layers_flax import PEG, FeedForward, Layer
from vit_layers_flax.typing import Array


class TwinsBlock(Layer):
    """``(batch, H, W, dim) -> (batch, H, W, dim)``: four pre-norm residual steps.

    :class:`LocalAttention` (``local_attn``, windows of ``window_size``), a feed-forward
    (``ff1``), :class:`GlobalAttention` (``global_attn``, keys and values sub-sampled by
    ``reduction_factor``) and a feed-forward (``ff2``): the reference's ``layers.{i}.0`` to
    ``.3``. ``has_local=False`` (the last stage) leaves out the first two, as the reference does.

    timm's options: ``qkv_bias``, ``norm_epsilon`` (the attentions' and feed-forwards'
    LayerNorms), ``pad_windows`` (the local attention pads maps its window does not divide),
    ``spatial_reduction`` (the global attention's, see :class:`GlobalAttention`), and
    ``peg_kernel_size``: a PEG (``peg``) of that kernel between the local and the global
    half, where timm's stage places it (after its first block, the local one); ``None``: none.
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.0
    window_size: int = 7
    reduction_factor: int = 7
    has_local: bool = True
    attention_implementation: str | None = None
    qkv_bias: bool = False
    norm_epsilon: float = 1e-5
    pad_windows: bool = False
    spatial_reduction: bool = False
    peg_kernel_size: int | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attention = dict(
            heads=self.heads,
            dim_head=self.dim_head,
            dropout=self.dropout,
            implementation=self.attention_implementation,
            qkv_bias=self.qkv_bias,
            norm_epsilon=self.norm_epsilon,
            **dtypes,
        )
        feed_forward = dict(
            dim=self.dim,
            hidden_dim=self.mlp_dim,
            dropout=self.dropout,
            norm_epsilon=self.norm_epsilon,
            **dtypes,
        )
        if self.has_local:
            local = LocalAttention(
                self.dim,
                window_size=self.window_size,
                pad_windows=self.pad_windows,
                name="local_attn",
                **attention,
            )
            x = x + local(x, train=train)
            x = x + FeedForward(name="ff1", **feed_forward)(x, train=train)
        if self.peg_kernel_size is not None:
            x = PEG(self.peg_kernel_size, name="peg", **dtypes)(x)
        global_ = GlobalAttention(
            self.dim,
            reduction_factor=self.reduction_factor,
            spatial_reduction=self.spatial_reduction,
            name="global_attn",
            **attention,
        )
        x = x + global_(x, train=train)
        return x + FeedForward(name="ff2", **feed_forward)(x, train=train)
