"""Convolutions (dense and depthwise) with CPU-tuned lowerings, and the positional encoding
generator (PEG), NHWC."""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vit_layers_flax.module import Layer
from vit_layers_flax.typing import Array
from vit_layers_flax.validation import conv_output_size, pair

#: The CPU-tuned convolutions are used when a program is lowered for the CPU; set the
#: environment variable ``VIT_LAYERS_FLAX_CPU_CONVOLUTIONS=xla`` before importing to use
#: XLA's convolutions there too (the same function either way; see docs/design.md).
CPU_TUNED = os.environ.get("VIT_LAYERS_FLAX_CPU_CONVOLUTIONS", "tuned") != "xla"


def _on_platform(cpu, default, *operands: Array) -> Array:
    """``cpu(*operands)`` in a program lowered for the CPU, ``default(*operands)`` elsewhere:
    chosen by the platform the computation is compiled for, not by process state."""
    if not CPU_TUNED:
        return default(*operands)
    return lax.platform_dependent(*operands, cpu=cpu, default=default)


class Conv(Layer):
    """torch's ``Conv2d(dim_in, features, k, stride, padding)`` on NHWC maps, with ``nn.Conv``'s
    fields and parameters (``kernel`` ``(kh, kw, dim_in, features)``, ``bias``) and initial values.

    ``padding`` is explicit and symmetric. Windows that do not overlap (kernel no larger than
    the stride, no padding) are one 2-D product on every platform; otherwise the CPU uses
    patches times the kernel, other platforms ``lax.conv_general_dilated``.
    """

    features: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        (kh, kw), strides, padding = pair(self.kernel_size), pair(self.strides), pair(self.padding)
        kernel, bias = _kernel_and_bias(self, (kh, kw, x.shape[-1], self.features))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if kh <= strides[0] and kw <= strides[1] and padding == (0, 0):
            y = _disjoint_windows_conv(x, kernel, strides)
        else:
            y = _on_platform(
                lambda x, k: _patch_conv(x, k, strides, padding),
                lambda x, k: _xla_conv(x, k, strides, padding),
                x,
                kernel,
            )
        return y if bias is None else y + bias


def _kernel_and_bias(module: nn.Module, kernel_shape: tuple[int, ...]) -> tuple[Array, Array | None]:
    """``nn.Conv``'s variables, with its initialisers: ``kernel`` of ``kernel_shape`` (HWIO)
    and, where ``module.use_bias``, ``bias`` of the output width."""
    kernel = module.param("kernel", nn.linear.default_kernel_init, kernel_shape, module.param_dtype)
    if not module.use_bias:
        return kernel, None
    return kernel, module.param("bias", nn.initializers.zeros_init(), kernel_shape[-1:], module.param_dtype)


def _disjoint_windows_conv(x: Array, kernel: Array, stride: tuple[int, int]) -> Array:
    """A convolution whose windows do not overlap (kernel no larger than the stride, no
    padding: patchify convolutions, strided 1 x 1 ones): each window's pixels, gathered by
    reshaping, as ``(windows, kh * kw * dim_in)`` rows times the kernel, one 2-D product
    whose gradients are 2-D products too."""
    (kh, kw), (sh, sw) = kernel.shape[:2], stride
    batch, height, width, channels = x.shape
    out_h, out_w = conv_output_size(height, kh, sh), conv_output_size(width, kw, sw)
    # rows and columns past the last window are never read; a last window's stride
    # overhang beyond the map is padded so that every window is one (sh, sw) block
    x = x[:, : out_h * sh, : out_w * sw]
    x = jnp.pad(x, ((0, 0), (0, out_h * sh - x.shape[1]), (0, out_w * sw - x.shape[2]), (0, 0)))
    windows = x.reshape(batch, out_h, sh, out_w, sw, channels)[:, :, :kh, :, :kw]
    windows = windows.transpose(0, 1, 3, 2, 4, 5).reshape(-1, kh * kw * channels)
    y = windows @ kernel.reshape(-1, kernel.shape[-1])
    return y.reshape(batch, out_h, out_w, kernel.shape[-1])


def _xla_conv(x: Array, kernel: Array, stride: tuple[int, int], padding: tuple[int, int]) -> Array:
    (ph, pw) = padding
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _patches(x: Array, kernel_shape: tuple[int, ...], stride, padding) -> Array:
    """``(batch * H' * W', kh * kw * dim_in)``: the windows each output pixel reads, flattened."""
    patches = jnp.concatenate(_windows(x, kernel_shape[:2], stride, padding), axis=-1)
    return patches.reshape(-1, patches.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _patch_conv(x: Array, kernel: Array, stride: tuple[int, int], padding: tuple[int, int]) -> Array:
    """The convolution as patches times the kernel; its kernel gradient is patches^T times
    the output gradient (one 2-D product), its input gradient XLA's (the gradient of the
    patches would be ``kh * kw`` padded copies of the input)."""
    return _patch_conv_fwd(x, kernel, stride, padding)[0]


def _patch_conv_fwd(x, kernel, stride, padding):
    patches = _patches(x, kernel.shape, stride, padding)
    y = patches @ kernel.reshape(-1, kernel.shape[-1])
    out_h, out_w = (conv_output_size(x.shape[i + 1], kernel.shape[i], stride[i], padding[i]) for i in (0, 1))
    return y.reshape(x.shape[0], out_h, out_w, kernel.shape[-1]), (x, kernel, patches)


def _patch_conv_bwd(stride, padding, residuals, dy):
    x, kernel, patches = residuals
    dy2 = dy.reshape(-1, dy.shape[-1])
    dkernel = (patches.T @ dy2).reshape(kernel.shape)
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, stride, padding), x)
    return input_vjp(dy)[0], dkernel


_patch_conv.defvjp(_patch_conv_fwd, _patch_conv_bwd)


def _windows(
    x: Array, kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> list[Array]:
    """The ``kh * kw`` strided slices of the zero-padded map, row-major over the kernel:
    slice ``(i, j)`` is ``(batch, H', W', C)``, the pixels kernel tap ``(i, j)`` reads."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    batch, height, width, channels = x.shape
    out_h, out_w = conv_output_size(height, kh, sh, ph), conv_output_size(width, kw, sw, pw)
    padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    return [
        lax.slice(
            padded,
            (0, i, j, 0),
            (batch, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, channels),
            (1, sh, sw, 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]


class DepthwiseConv(Layer):
    """torch's ``Conv2d(dim_in, features, k, stride, padding, groups=dim_in)`` on NHWC maps.

    Output channel ``o`` reads input channel ``o // (features // dim_in)``, as torch's groups
    do; ``features`` must be a multiple of the input's channels. Parameters are
    ``nn.Conv``'s: ``kernel`` ``(kh, kw, 1, features)`` and ``bias``. On the CPU it is a sum
    of ``kh * kw`` shifted slices scaled per channel, elsewhere a grouped XLA convolution.
    """

    features: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim_in = x.shape[-1]
        if self.features % dim_in:
            raise ValueError(
                f"DepthwiseConv: expected input channels that divide features={self.features}, "
                f"received input of shape {tuple(x.shape)}"
            )
        (kh, kw), strides, padding = pair(self.kernel_size), pair(self.strides), pair(self.padding)
        kernel, bias = _kernel_and_bias(self, (kh, kw, 1, self.features))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = _on_platform(
            lambda x, k: _shifted_sum(x, k, self.features // dim_in, strides, padding),
            lambda x, k: lax.conv_general_dilated(
                x,
                k,
                window_strides=strides,
                padding=tuple((p, p) for p in padding),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=dim_in,
            ),
            x,
            kernel,
        )
        return y if bias is None else y + bias


def _shifted_sum(
    x: Array, kernel: Array, multiplier: int, stride: tuple[int, int], padding: tuple[int, int]
) -> Array:
    """The depthwise convolution as ``sum_ij slice_ij(pad(x)) * kernel[i, j]``."""
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    widened = jnp.repeat(x, multiplier, axis=-1).astype(accumulate)
    weights = kernel[:, :, 0, :].astype(accumulate).reshape(-1, kernel.shape[-1])  # (kh * kw, dim_out)
    windows = _windows(widened, kernel.shape[:2], stride, padding)
    y = windows[0] * weights[0]
    for window, weight in zip(windows[1:], weights[1:], strict=True):
        y = y + window * weight
    return y.astype(x.dtype)


class PEG(Layer):
    """Positional encoding generator: ``x + depthwise_conv(k, padding=k // 2)(x)``.

    ``(batch, H, W, C) -> (batch, H, W, C)`` (Twins-SVT, RegionViT, ScalableViT); the
    convolution is the parameter ``proj``, as in the reference.
    """

    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: Array) -> Array:
        proj = DepthwiseConv(
            x.shape[-1],
            self.kernel_size,
            padding=self.kernel_size // 2,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )
        return proj(x) + x
