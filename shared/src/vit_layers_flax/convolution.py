"""Depthwise convolutions and the positional encoding generator (PEG), NHWC."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.typing import Array, Dtype
from vit_layers_flax.validation import pair


class DepthwiseConv2d(nn.Module):
    """A depthwise (one filter group per input channel) convolution with explicit padding.

    ``(batch, H, W, C) -> (batch, H', W', features)``; ``features`` must be a multiple of
    ``C``. Padding is symmetric and explicit, as torch's ``Conv2d(padding=p, groups=C)``.
    The kernel is ``(kh, kw, 1, features)`` (torch's ``(features, 1, kh, kw)``).
    """

    features: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ph, pw = pair(self.padding)
        return nn.Conv(
            self.features,
            kernel_size=pair(self.kernel_size),
            strides=pair(self.stride),
            padding=((ph, ph), (pw, pw)),
            feature_group_count=x.shape[-1],
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)


class PEG(nn.Module):
    """Positional encoding generator: ``x + DepthwiseConv(k, padding=k // 2)(x)``.

    ``(batch, H, W, C) -> (batch, H, W, C)`` (Twins-SVT, RegionViT, ScalableViT).
    """

    kernel_size: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        proj = DepthwiseConv2d(
            x.shape[-1],
            self.kernel_size,
            padding=self.kernel_size // 2,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )
        return proj(x) + x
