"""LayerNorms with the reference's numerics (eps 1e-5, biased variance)."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.typing import Array, Dtype

#: ``torch.nn.LayerNorm`` over the last axis: eps 1e-5 (Flax defaults to 1e-6), and the
#: two-pass variance, which is what torch computes.
LayerNorm = partial(nn.LayerNorm, epsilon=1e-5, use_fast_variance=False)


class ChanLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NHWC feature map (the conv models' ``LayerNorm``).

    ``(batch, height, width, channels) -> (batch, height, width, channels)``.

    The reference normalises axis 1 of NCHW with params ``g``, ``b`` of shape
    ``(1, C, 1, 1)``; here they are ``(C,)`` on the last axis. Statistics are computed in
    float32 whatever ``dtype`` is.
    """

    eps: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        g = self.param("g", nn.initializers.ones, (dim,), self.param_dtype)
        b = self.param("b", nn.initializers.zeros, (dim,), self.param_dtype)
        dtype = self.dtype or x.dtype
        x32 = x.astype(jnp.promote_types(dtype, jnp.float32))
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jnp.reciprocal(jnp.sqrt(var + self.eps))
        return (y * g + b).astype(dtype)
