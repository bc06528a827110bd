"""Convolutions written for XLA's CPU backend (dense and depthwise) and the positional encoding
generator (PEG), NHWC."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vit_layers_flax.typing import Array, Dtype
from vit_layers_flax.validation import pair


class Conv(nn.Module):
    """torch's ``Conv2d(dim_in, features, k, stride, padding)`` on NHWC maps, with ``nn.Conv``'s
    parameters: ``kernel`` ``(kh, kw, dim_in, features)`` (convert torch's with
    ``StateDict.conv2d``) and ``bias``; the same initial values as ``nn.Conv``.

    ``(batch, H, W, dim_in) -> (batch, H', W', features)``, ``H' = (H + 2 ph - kh) // sh + 1``.
    On the CPU the ``kh * kw`` strided slices of the padded map are concatenated into
    ``(batch * H' * W', kh * kw * dim_in)`` patches and multiplied by the kernel as one 2-D
    matrix; the kernel gradient is those patches, transposed, times the output gradient,
    and the input gradient XLA's. XLA's CPU convolution, above all its kernel gradient,
    is the slower way: LeViT's small train step (whose stem is four 3 x 3 stride-2
    convolutions) runs in 89 instead of 117 ms. The patches take ``kh * kw / (sh * sw)``
    times the input's memory, so this suits small kernels. On other backends it is
    ``lax.conv_general_dilated``. A convolution whose windows do not overlap (kernel no
    larger than the stride, no padding: a patchify or a 1 x 1 convolution) is, on every
    backend, its windows reshaped into rows times the kernel as one 2-D matrix product
    (as :class:`Dense`), gradients included.
    """

    features: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        kernel, bias = _kernel_and_bias(self, (kh, kw, x.shape[-1], self.features))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if kh <= sh and kw <= sw and (ph, pw) == (0, 0):
            y = _disjoint_windows_conv(x, kernel, (sh, sw))
        elif jax.default_backend() == "cpu":
            y = _patch_conv(x, kernel, (sh, sw), (ph, pw))
        else:
            y = _xla_conv(x, kernel, (sh, sw), (ph, pw))
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
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
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
    (kh, kw), (sh, sw), (ph, pw) = kernel.shape[:2], stride, padding
    out_h, out_w = (x.shape[1] + 2 * ph - kh) // sh + 1, (x.shape[2] + 2 * pw - kw) // sw + 1
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
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
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


class DepthwiseConv(nn.Module):
    """torch's ``Conv2d(dim_in, dim_out, k, stride, padding, groups=dim_in)`` on NHWC maps.

    ``(batch, H, W, dim_in) -> (batch, H', W', dim_out)``, ``H' = (H + 2 ph - kh) // sh + 1``;
    output channel ``o`` reads input channel ``o // (dim_out // dim_in)``, as torch's
    groups do. Parameters are ``nn.Conv``'s: ``kernel`` ``(kh, kw, 1, dim_out)`` (torch's
    ``(dim_out, 1, kh, kw)``; convert it with ``StateDict.conv2d``) and ``bias``.

    On the CPU the convolution is computed as a sum of ``kh * kw`` strided slices of the
    padded map, each scaled per channel, accumulated in at least float32: XLA fuses that
    into one loop, and its gradient into pads and reductions, where its grouped
    convolution (and above all that convolution's gradient) runs several times slower. On
    other backends it is ``lax.conv_general_dilated`` with ``feature_group_count``.
    """

    dim_in: int
    dim_out: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = self.kernel_size
        kernel, bias = _kernel_and_bias(self, (kh, kw, 1, self.dim_out))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        (ph, pw), (sh, sw) = self.padding, self.stride
        if jax.default_backend() == "cpu":
            y = _shifted_sum(x, kernel, self.dim_out // self.dim_in, (sh, sw), (ph, pw))
        else:
            y = lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(sh, sw),
                padding=((ph, ph), (pw, pw)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=self.dim_in,
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
) -> DepthwiseConv:
    """torch's ``Conv2d(dim_in, dim_out, k, stride, padding, groups=dim_in)``: a
    :class:`DepthwiseConv`. ``dim_out`` must be a multiple of ``dim_in``; padding is
    explicit and symmetric, never ``'SAME'``.
    """
    if dim_out % dim_in:
        raise ValueError(f"depthwise conv: dim_out {dim_out} must be a multiple of dim_in {dim_in}")
    return DepthwiseConv(
        dim_in,
        dim_out,
        kernel_size=pair(kernel_size),
        stride=pair(stride),
        padding=pair(padding),
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
