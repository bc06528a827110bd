"""Pre-norm MLP block, as vit-pytorch's ``FeedForward``."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax.activation import gelu
from vit_layers_flax.dense import Dense
from vit_layers_flax.layer_norm import LayerNorm
from vit_layers_flax.module import Layer
from vit_layers_flax.typing import Array


class FeedForward(Layer):
    """``LayerNorm -> Dense(hidden_dim) -> GELU (exact) -> Dropout -> Dense(dim) -> Dropout``.

    ``(..., dim) -> (..., dim)`` (tokens, or an NHWC map: a 1x1 convolution is a Dense on
    the channel axis); parameters ``norm``, ``fc1``, ``fc2``. ``output_dropout=False``
    leaves out the last dropout, for references whose feed-forward ends with the second
    projection (CrossFormer, RegionViT); ``norm_epsilon`` is the LayerNorm's.
    """

    dim: int
    hidden_dim: int
    dropout: float = 0.0
    output_dropout: bool = True
    norm_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dense)(x)
        x = Dense(self.hidden_dim, name="fc1", **dense)(x)
        x = gelu(x)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = Dense(self.dim, name="fc2", **dense)(x)
        if not self.output_dropout:
            return x
        return nn.Dropout(self.dropout)(x, deterministic=not train)
