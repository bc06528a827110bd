"""A Dense layer that multiplies one 2-D matrix, whatever the leading axes."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax.typing import Array


class Dense(nn.Dense):
    """:class:`flax.linen.Dense` (same fields, parameters ``kernel`` / ``bias``, same outputs)
    on ``(..., in_features) -> (..., features)``, computed on the input flattened to
    ``(prod(...), in_features)``.

    Tokens ``(batch, tokens, dim)`` or maps ``(batch, H, W, dim)`` then make one 2-D matrix
    product, whose weight gradient contracts a single axis (contracting several leading
    axes, XLA's CPU backend copies a transposed cotangent for every weight gradient).
    """

    def __call__(self, inputs: Array) -> Array:
        flat = inputs.reshape(-1, inputs.shape[-1])
        return super().__call__(flat).reshape(*inputs.shape[:-1], self.features)
