"""LayerScale (Touvron et al., 2021, section 2): a learned per-channel scale on each residual branch."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import Layer
from vit_layers_flax.typing import Array, Dtype


def initial_layer_scale(block_number: int) -> float:
    """The initial LayerScale of the block numbered ``block_number`` (1-based) in its stack.

    As the reference and section 2 of the paper: 0.1 up to block 18, 1e-5 up to block 24,
    1e-6 beyond. The reference numbers each block in its own stack (``ind + 1``), so the
    scale shrinks along one deep stack rather than with the stack's total depth.
    """
    if block_number <= 18:
        return 0.1
    if block_number <= 24:
        return 1e-5
    return 1e-6


class LayerScale(Layer):
    """``branch * scale``: ``(..., dim) -> (..., dim)`` with a learned ``scale`` ``(dim,)``.

    ``initial_scale`` (a float, or a traced scalar: a row of a per-layer input) fills
    ``scale`` at initialisation. The reference wraps the branch module and keeps ``scale``
    as ``(1, 1, dim)``; here the block calls the branch, then this, and the converter drops
    the singleton axes.
    """

    @nn.compact
    def __call__(self, branch: Array, initial_scale: Array | float) -> Array:
        def init(key: Array, shape: tuple[int, ...], dtype: Dtype) -> Array:
            return jnp.full(shape, initial_scale, dtype)

        scale = self.param("scale", init, (branch.shape[-1],), self.param_dtype)
        branch, scale = nn.dtypes.promote_dtype(branch, scale, dtype=self.dtype)
        return branch * scale
