"""The exact GELU, written as ``torch.nn.GELU()`` computes it."""

from __future__ import annotations

import math

import jax

from vit_layers_flax.typing import Array


def gelu(x: Array) -> Array:
    """``x / 2 * (1 + erf(x / sqrt(2)))``, elementwise, in ``x``'s dtype: the exact
    (not tanh-approximated) GELU, the reference's ``nn.GELU()``.

    The same function as ``flax.linen.gelu(x, approximate=False)``, written with ``erf``
    (one rational approximation in XLA) instead of ``erfc`` (two branches and an exponential).
    """
    return x * 0.5 * (1 + jax.lax.erf(x * (1 / math.sqrt(2))))
