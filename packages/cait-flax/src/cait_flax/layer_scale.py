"""LayerScale (Touvron et al., 2021, section 2): a learned per-channel scale on each residual branch."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.typing import Array, Dtype


def layer_scale_init_eps(depth: int) -> float:
    """The initial scale of the block at 1-based position ``depth`` in its stack.

    As the reference (and section 2 of the paper): ``0.1`` up to depth 18, ``1e-5`` up to 24,
    ``1e-6`` beyond. The reference passes each layer's own position (``ind + 1``), not the
    stack's total depth, so the scale shrinks along one deep stack.
    """
    if depth <= 18:
        return 0.1
    if depth <= 24:
        return 1e-5
    return 1e-6


class LayerScale(nn.Module):
    """``branch * scale`` with a learned ``scale`` of shape ``(dim,)`` filled with
    :func:`layer_scale_init_eps` ``(depth)``.

    ``(..., dim) -> (..., dim)``. Applied to the output of a residual branch (the reference
    wraps the branch module; here the block calls the branch, then this). The reference's
    parameter has shape ``(1, 1, dim)``; the converter drops the singleton axes. Under
    ``nn.scan`` one module serves every position of the stack: the caller passes the
    position's initial value as ``init_eps`` (a traced scalar) and leaves ``depth`` unset.
    """

    dim: int
    depth: int | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, branch: Array, init_eps: Array | float | None = None) -> Array:
        if init_eps is None:
            init_eps = layer_scale_init_eps(self.depth)

        def init(key: Array, shape: tuple[int, ...], dtype: Dtype) -> Array:
            return jnp.full(shape, init_eps, dtype)

        scale = self.param("scale", init, (self.dim,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(branch, scale)
        return branch.astype(dtype) * scale.astype(dtype)
