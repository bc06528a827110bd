"""Convert vit-pytorch ``scalable_vit.ScalableViT`` weights into :class:`scalablevit_flax.ScalableViT` variables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from scalablevit_flax.scalable_vit import ScalableViT
from vit_layers_flax import StateDict, finalize


def _feed_forward(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The conv feed-forward (``net`` = ChanLayerNorm, 1 x 1 conv, GELU, Dropout, 1 x 1 conv, Dropout)
    -> the shared ``FeedForward`` (``norm``, ``fc1``, ``fc2``) on the channel axis."""
    return {
        "norm": sd.chan_layer_norm_as_layer_norm(f"{prefix}.net.0"),
        "fc1": sd.pointwise(f"{prefix}.net.1"),
        "fc2": sd.pointwise(f"{prefix}.net.4"),
    }


def _block(sd: StateDict, prefix: str, peg: bool) -> dict[str, Any]:
    """``Transformer.layers.{i}``: ``0`` SSA, ``1`` feed-forward, ``2`` PEG (or None), ``3`` feed-forward,
    ``4`` IWSA (run in that index order, whatever the reference's forward calls them)."""
    ssa, iwsa = f"{prefix}.0", f"{prefix}.4"
    params = {
        "ssa": {
            "norm": sd.chan_layer_norm(f"{ssa}.norm"),
            "to_q": sd.pointwise(f"{ssa}.to_q", bias=False),
            "to_k": sd.conv2d(f"{ssa}.to_k", bias=False),
            "to_v": sd.conv2d(f"{ssa}.to_v", bias=False),
            "to_out": sd.pointwise(f"{ssa}.to_out.0"),
        },
        "ff1": _feed_forward(sd, f"{prefix}.1"),
        "ff2": _feed_forward(sd, f"{prefix}.3"),
        "iwsa": {
            "norm": sd.chan_layer_norm(f"{iwsa}.norm"),
            "local_interactive_module": sd.conv2d(f"{iwsa}.local_interactive_module"),
            "to_q": sd.pointwise(f"{iwsa}.to_q", bias=False),
            "to_k": sd.pointwise(f"{iwsa}.to_k", bias=False),
            "to_v": sd.pointwise(f"{iwsa}.to_v", bias=False),
            "to_out": sd.pointwise(f"{iwsa}.to_out.0"),
        },
    }
    if peg:
        params["peg"] = {"proj": sd.conv2d(f"{prefix}.2.proj")}
    return params


def sample_image_size(model: ScalableViT) -> int:
    """A square image side every stage of ``model`` accepts: ``4 * 2 ** (stages - 1)`` times the
    least common multiple of all reduction factors and windows (each stage's map is then a
    multiple of it)."""
    unit = 1
    for config in model.stage_configs():
        for tile in (config["reduction_factor"], config["window_size"]):
            unit = math.lcm(unit, tile or 1)
    return 4 * 2 ** (model.num_stages - 1) * unit


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ScalableViT) -> dict[str, Any]:
    """``torch_scalable_vit.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`ScalableViT` with the same hyperparameters. Stage ``s`` is the
    reference's ``layers.{s}`` (``0`` transformer, ``1`` downsampling); 1 x 1 convolutions
    become ``Dense`` kernels, the feed-forwards' channel LayerNorms LayerNorm ``scale`` /
    ``bias``. Raises :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing
    missing, unexpected and mis-shaped entries.
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {"to_patches": sd.conv2d("to_patches")}
    for s, config in enumerate(model.stage_configs()):
        is_last = s == model.num_stages - 1
        prefix = f"layers.{s}"
        transformer = {
            f"layers_{i}": _block(sd, f"{prefix}.0.layers.{i}", peg=i == 0) for i in range(config["depth"])
        }
        if not is_last:
            transformer["norm"] = sd.chan_layer_norm(f"{prefix}.0.norm")
        stage: dict[str, Any] = {"transformer": transformer}
        if not is_last:
            stage["downsample"] = sd.conv2d(f"{prefix}.1.conv")
        params[f"layers_{s}"] = stage
    # mlp_head = Sequential(Reduce(mean), LayerNorm, Linear)
    params["mlp_head"] = {"norm": sd.layer_norm("mlp_head.1"), "fc": sd.linear("mlp_head.2")}
    side = sample_image_size(model)
    sample = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
