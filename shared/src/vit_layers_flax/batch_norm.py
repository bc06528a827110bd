"""BatchNorm with torch's ``BatchNorm2d`` statistics, NHWC."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.module import Layer
from vit_layers_flax.typing import Array


class BatchNorm(Layer):
    """``torch.nn.BatchNorm2d`` on the last (channel) axis: ``(..., channels) -> (..., channels)``.

    Variables are :class:`flax.linen.BatchNorm`'s (params ``scale``, ``bias``; ``batch_stats``
    ``mean``, ``var`` in float32), converted by ``StateDict.batch_norm``. ``train=True``
    normalises with the batch statistics and (with ``mutable=['batch_stats']``) updates the
    running averages as torch does: ``momentum`` is Flax's (0.9 is torch's 0.1) and the
    running variance takes the *unbiased* batch variance, where Flax's BatchNorm takes the
    biased one. Statistics run in float32; one value per channel in training raises a
    ``ValueError`` at trace time, as torch does.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    scale_init: nn.initializers.Initializer = nn.initializers.ones
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))

        dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        x32 = x.astype(jnp.promote_types(dtype, jnp.float32))
        axes = tuple(range(x.ndim - 1))
        if train:
            if x.size // features < 2:  # as torch: batch statistics of one value are undefined
                raise ValueError(
                    f"BatchNorm: expected more than 1 value per channel in training, received "
                    f"input of shape {tuple(x.shape)}"
                )
            mean = x32.mean(axes)
            var = jnp.square(x32 - mean).mean(axes)  # two-pass, biased: what torch normalises with
            if not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x32 - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        return (y * scale.astype(x32.dtype) + bias.astype(x32.dtype)).astype(dtype)
