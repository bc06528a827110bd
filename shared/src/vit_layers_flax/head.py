"""The classification head most vit-pytorch models use: ``LayerNorm -> Linear``."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax.dense import Dense
from vit_layers_flax.layer_norm import LayerNorm
from vit_layers_flax.module import Layer
from vit_layers_flax.typing import Array


class ClassifierHead(Layer):
    """``LayerNorm -> Dense(num_classes)``: ``(batch, dim) -> (batch, num_classes)``.

    The reference's ``mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim,
    num_classes))``; parameters ``norm`` (``mlp_head.0``) and ``fc`` (``mlp_head.1``),
    converted by :func:`vit_layers_flax.classifier_head_params`. ``pre_logits`` (or
    ``num_classes == 0``, no ``fc``) returns the normalised features the ``fc`` reads;
    ``norm_epsilon`` is the LayerNorm's.
    """

    num_classes: int
    norm_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, *, pre_logits: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dtypes)(x)
        if pre_logits or not self.num_classes:
            return x
        return Dense(self.num_classes, name="fc", **dtypes)(x)
