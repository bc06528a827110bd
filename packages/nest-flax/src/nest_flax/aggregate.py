"""Block aggregation between hierarchies: 3x3 convolution, LayerNorm, 3x3 max-pool."""

from __future__ import annotations

import flax.linen as nn

from vit_layers_flax import Conv, Layer, LayerNorm
from vit_layers_flax.typing import Array

#: the max-pool paddings :class:`Aggregate` knows: vit-pytorch's one on each side, or TF's
#: ``'SAME'`` (the original JAX NesT's, timm's ``nest_*_jx``: the extra row and column go after)
POOL_PADDINGS = ("symmetric", "same")


class Aggregate(Layer):
    """``conv`` (3x3, padding 1) -> LayerNorm ``norm`` over channels -> max-pool 3x3, stride 2.

    ``(batch, H, W, dim) -> (batch, ceil(H / 2), ceil(W / 2), dim_out)``: the reference's
    ``Aggregate(dim, dim_out)`` (``.0`` and ``.1``). The pooling pads with ``-inf``, as
    ``torch.nn.MaxPool2d`` does, so a border output is the maximum of real values only:
    ``pool_padding="symmetric"`` (vit-pytorch's) one row and column on each side,
    ``"same"`` TF's ``'SAME'`` (the original NesT's and timm's ``nest_*_jx``: on an even map,
    nothing before and one after). ``norm_epsilon`` is the LayerNorm's (1e-6 in timm's NesT).
    """

    dim_out: int
    norm_epsilon: float = 1e-5
    pool_padding: str = "symmetric"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.pool_padding not in POOL_PADDINGS:
            raise ValueError(
                f"Aggregate: pool_padding must be one of {POOL_PADDINGS}, received {self.pool_padding!r}"
            )
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(self.dim_out, 3, padding=1, name="conv", **dtypes)(x)
        x = LayerNorm(epsilon=self.norm_epsilon, name="norm", **dtypes)(x)
        # flax's max_pool pads with its initial value, -inf; "SAME" is XLA's (TF's) padding
        padding = "SAME" if self.pool_padding == "same" else ((1, 1), (1, 1))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=padding)
