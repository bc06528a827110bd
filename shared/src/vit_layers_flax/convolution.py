"""Depthwise convolutions and the positional encoding generator (PEG), NHWC."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.typing import Array, Dtype
from vit_layers_flax.validation import pair


def depthwise_conv(
    dim_in: int,
    dim_out: int,
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    use_bias: bool = True,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """torch's ``Conv2d(dim_in, dim_out, k, stride, padding, groups=dim_in)`` as an NHWC ``nn.Conv``.

    ``(batch, H, W, dim_in) -> (batch, H', W', dim_out)``; ``dim_out`` must be a multiple of
    ``dim_in``. Padding is explicit and symmetric, never ``'SAME'``. The kernel is
    ``(kh, kw, 1, dim_out)`` (torch's ``(dim_out, 1, kh, kw)``; convert it with
    ``StateDict.conv2d``).
    """
    if dim_out % dim_in:
        raise ValueError(f"depthwise conv: dim_out {dim_out} must be a multiple of dim_in {dim_in}")
    ph, pw = pair(padding)
    return nn.Conv(
        dim_out,
        kernel_size=pair(kernel_size),
        strides=pair(stride),
        padding=((ph, ph), (pw, pw)),
        feature_group_count=dim_in,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


class PEG(nn.Module):
    """Positional encoding generator: ``x + depthwise_conv(k, padding=k // 2)(x)``.

    ``(batch, H, W, C) -> (batch, H, W, C)`` (Twins-SVT, RegionViT, ScalableViT); the
    convolution is the parameter ``proj``, as in the reference.
    """

    kernel_size: int = 3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        proj = depthwise_conv(
            dim,
            dim,
            self.kernel_size,
            padding=self.kernel_size // 2,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )
        return proj(x) + x
