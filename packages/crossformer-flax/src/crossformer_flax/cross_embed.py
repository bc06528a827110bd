"""CrossFormer's cross-scale embedding layer (CEL): strided convolutions of several kernel sizes, concatenated."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import Conv, Layer, conv_output_size
from vit_layers_flax.typing import Array


def scale_dims(dim_out: int, num_scales: int) -> list[int]:
    """Output channels of each scale, smallest kernel first, as the reference splits them.

    ``dim_out / 2, dim_out / 4, ...`` (truncated) for all but the largest kernel, which gets
    the rest: ``scale_dims(64, 4) == [32, 16, 8, 8]``, ``scale_dims(48, 2) == [24, 24]``.
    """
    dims = [int(dim_out / (2**i)) for i in range(1, num_scales)]
    return [*dims, dim_out - sum(dims)]


def embedding_padding(kernel: int, stride: int) -> int:
    """The reference's padding of an embedding convolution: ``(kernel - stride) // 2``."""
    return (kernel - stride) // 2


def embedded_side(side: int, kernel: int, stride: int) -> int:
    """The side of an embedding convolution's output: ``side // stride`` when ``kernel - stride``
    is even, ``(side - 1) // stride`` when it is odd (the padding rounds down); below one when
    the input is too small."""
    return conv_output_size(side, kernel, stride, embedding_padding(kernel, stride))


class CrossEmbedLayer(Layer):
    """vit-pytorch ``crossformer.CrossEmbedLayer``: ``(batch, H, W, C) -> (batch, H', W', dim_out)``.

    One convolution per kernel size (``convs_0`` ... , kernels sorted ascending as the
    reference sorts them), all with stride ``stride`` and symmetric padding
    ``(kernel - stride) // 2``, so each samples the same grid of positions with a
    different receptive field. Their outputs, ``scale_dims(dim_out, len(kernel_sizes))``
    channels each, are concatenated on the channel axis, smallest kernel first. ``H'`` is
    :func:`embedded_side` of ``H`` (the same for every kernel when the kernels'
    ``kernel - stride`` have one parity; the model checks it before calling this layer).
    """

    dim_out: int
    kernel_sizes: Sequence[int]
    stride: int = 2

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernels = sorted(self.kernel_sizes)
        fmaps = []
        for i, (kernel, dim) in enumerate(zip(kernels, scale_dims(self.dim_out, len(kernels)), strict=True)):
            conv = Conv(
                dim,
                kernel,
                strides=self.stride,
                padding=embedding_padding(kernel, self.stride),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"convs_{i}",
            )
            fmaps.append(conv(x))
        return jnp.concatenate(fmaps, axis=-1)
