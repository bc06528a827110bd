"""The fields every layer and every model shares, declared once."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vit_layers_flax.typing import Dtype


class Layer(nn.Module, kw_only=True):
    """A module with the two dtype fields (keyword-only): ``dtype``, the computation dtype
    (``None``: the promoted dtype of input and parameters), and ``param_dtype``, the
    parameters' (float32)."""

    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32


class Model(Layer, kw_only=True):
    """A :class:`Layer` that stacks blocks, with ``remat`` (recompute each block's activations
    in the backward pass) and ``scan`` (one ``nn.scan`` over identical blocks, parameters
    stacked under ``layers``) keyword-only: every model, and the stages that stack blocks."""

    remat: bool = False
    scan: bool = False
