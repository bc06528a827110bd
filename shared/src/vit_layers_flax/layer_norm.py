"""LayerNorms with the reference's numerics (eps 1e-5, biased two-pass variance) and a
compact derivative."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes as flax_dtypes

from vit_layers_flax.module import Layer
from vit_layers_flax.typing import Array


def _normalize(x: Array, eps: float) -> tuple[Array, Array]:
    """``x`` normalised over its last axis in (at least) float32, and ``1 / std``."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    centered = x - x.mean(-1, keepdims=True)
    inv_std = jax.lax.rsqrt(jnp.square(centered).mean(-1, keepdims=True) + eps)
    return centered * inv_std, inv_std


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, eps: float = 1e-5) -> Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis, as
    ``torch.nn.LayerNorm`` computes it (two-pass, biased variance), with the statistics in
    float32 whatever ``x``'s dtype; returns the promoted dtype of ``x``, ``scale``, ``bias``.
    ``x: (..., dim)``, ``scale, bias: (dim,)``. Its derivative is written out
    (:func:`jax.custom_jvp`, so every transformation still works): differentiating the
    two-pass formula would leave XLA several reductions and broadcasts per norm.
    """
    xhat, _ = _normalize(x, eps)
    return (xhat * scale + bias).astype(jnp.result_type(x, scale, bias))


@layer_norm.defjvp
def _layer_norm_jvp(eps, primals, tangents):
    x, scale, bias = primals
    dx, dscale, dbias = tangents
    xhat, inv_std = _normalize(x, eps)
    dtype = jnp.result_type(x, scale, bias)
    # d xhat = (dx - mean(dx) - xhat * mean(xhat * (dx - mean(dx)))) / std
    dx = dx.astype(xhat.dtype)
    dx = dx - dx.mean(-1, keepdims=True)
    dxhat = inv_std * (dx - xhat * (xhat * dx).mean(-1, keepdims=True))
    y = xhat * scale + bias
    dy = dxhat * scale + xhat * dscale + dbias
    return y.astype(dtype), dy.astype(dtype)


class LayerNorm(Layer):
    """``torch.nn.LayerNorm`` over the last axis (:func:`layer_norm`): eps 1e-5 (Flax
    defaults to 1e-6) and the two-pass variance.

    ``(..., dim) -> (..., dim)``. Parameters ``scale`` and ``bias``, ``(dim,)``, as
    ``flax.linen.LayerNorm``'s; the output dtype is ``dtype``, or else the promoted dtype of
    the input and the parameters (Flax's rule).
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (dim,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (dim,), self.param_dtype)
        dtype = flax_dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        return layer_norm(x, scale, bias, self.epsilon).astype(dtype)
