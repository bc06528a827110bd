"""PatchMerger: merge N tokens into M learned-query mixtures (Renggli et al., 2022)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax import DotProductAttention, Layer, LayerNorm, check_config
from vit_layers_flax.typing import Array


class PatchMerger(Layer):
    """``(batch, tokens, dim) -> (batch, num_tokens_out, dim)``.

    ``x = LayerNorm(x)``, then each of ``num_tokens_out`` learned queries ``(num_tokens_out,
    dim)`` attends over the normalised tokens with ``softmax(queries @ x^T * dim ** -0.5)``
    and returns the weighted sum of the normalised tokens, as vit-pytorch's
    ``vit_with_patch_merger.PatchMerger``, through one head of
    :class:`~vit_layers_flax.DotProductAttention`. Parameters ``norm`` and ``queries``.
    Works on any number of input tokens.
    """

    dim: int
    num_tokens_out: int

    def __post_init__(self):
        check_config(
            self.dim > 0 and self.num_tokens_out > 0,
            f"PatchMerger: dim and num_tokens_out must be positive, received dim={self.dim}, "
            f"num_tokens_out={self.num_tokens_out}",
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(
                f"PatchMerger: expected features of shape (batch, tokens, {self.dim}), received shape {tuple(x.shape)}"
            )
        x = LayerNorm(name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        init = nn.initializers.normal(stddev=1.0)  # torch.randn
        queries = self.param("queries", init, (self.num_tokens_out, self.dim), self.param_dtype)
        # one head of plain softmax attention: the queries attend over the normalised tokens,
        # which are both keys and values
        q = jnp.broadcast_to(queries.astype(x.dtype), (x.shape[0], *queries.shape))[:, :, None, :]
        kv = x[:, :, None, :]
        return DotProductAttention(name="attend")(q, kv, kv)[:, :, 0, :]  # scale dim ** -0.5
