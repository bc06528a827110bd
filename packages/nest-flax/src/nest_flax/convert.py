"""Convert vit-pytorch ``nest.NesT`` weights into :class:`nest_flax.NesT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from nest_flax.nest import NesT
from vit_layers_flax import StateDict, cast_tuple, conv_feed_forward_params, model_variables


def _hierarchy(sd: StateDict, prefix: str, depth: int, aggregate: bool) -> dict[str, Any]:
    """The reference's ``layers.{i}``: ``0`` a ``nest.Transformer`` (``pos_emb``; ``layers.{j}.0``
    attention and ``layers.{j}.1`` feed-forward, on 1x1 convolutions), ``1`` the aggregation."""
    transformer = f"{prefix}.0"
    params: dict[str, Any] = {"pos_emb": sd[f"{transformer}.pos_emb"], "transformer": {}}
    for j in range(depth):
        attn, ff = f"{transformer}.layers.{j}.0", f"{transformer}.layers.{j}.1"
        params["transformer"][f"layers_{j}"] = {
            "attn": {
                "norm": sd.chan_layer_norm(f"{attn}.norm"),
                "to_qkv": sd.pointwise(f"{attn}.to_qkv", bias=False),
                "to_out": sd.pointwise(f"{attn}.to_out.0"),
            },
            "ff": conv_feed_forward_params(sd, f"{ff}.net"),
        }
    if aggregate:
        params["aggregate"] = {
            "conv": sd.conv2d(f"{prefix}.1.0"),
            "norm": sd.chan_layer_norm(f"{prefix}.1.1"),
        }
    return params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: NesT) -> dict[str, Any]:
    """``torch_nest.state_dict()`` -> the variables for ``model.apply``: level ``i`` (the
    reference's ``layers.{i}``) is ``stages_{i}``, the head's ``mlp_head.0`` / ``mlp_head.2`` are
    ``norm`` / ``head``; 1x1 convolutions become Dense kernels. A ``num_classes=0`` model has
    no ``head``: it takes a reference built with ``num_classes=0`` (an empty ``Linear``)."""
    sd = StateDict(state_dict)
    params: dict[str, Any] = {
        "to_patch_embedding": {
            "patch_norm": sd.chan_layer_norm("to_patch_embedding.1"),
            "proj": sd.pointwise("to_patch_embedding.2"),
            "norm": sd.chan_layer_norm("to_patch_embedding.3"),
        },
        "norm": sd.chan_layer_norm("mlp_head.0"),
    }
    if (head := sd.classifier("mlp_head.2", model.num_classes)) is not None:
        params["head"] = head
    repeats = cast_tuple(model.block_repeats, model.num_hierarchies)
    for i, depth in enumerate(repeats):
        params[f"stages_{i}"] = _hierarchy(sd, f"layers.{i}", depth, aggregate=i < model.num_hierarchies - 1)
    side = model.input_sizes().smallest
    sample = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    return model_variables(sd, {"params": params}, model, sample)
