"""Convert vit-pytorch ``scalable_vit.ScalableViT`` weights into :class:`scalablevit_flax.ScalableViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalablevit_flax.scalable_vit import ScalableViT
from vit_layers_flax import StateDict, conv_feed_forward_params, model_variables


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
        "ff1": conv_feed_forward_params(sd, f"{prefix}.1.net"),
        "ff2": conv_feed_forward_params(sd, f"{prefix}.3.net"),
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


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ScalableViT) -> dict[str, Any]:
    """``torch_scalable_vit.state_dict()`` -> the variables for ``model.apply``.

    Stage ``s`` is the reference's ``layers.{s}`` (``0`` transformer: its blocks and final
    norm; ``1`` downsampling); ``mlp_head`` is its ``Sequential(Reduce, LayerNorm, Linear)``.
    A ``num_classes=0`` model has no ``mlp_head/fc``: it takes a reference built with
    ``num_classes=0`` (whose ``Linear(dim, 0)`` is empty).
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {"to_patches": sd.conv2d("to_patches")}
    for s, config in enumerate(model.stage_configs()):
        prefix = f"layers.{s}"
        stage = {
            f"layers_{i}": _block(sd, f"{prefix}.0.layers.{i}", peg=i == 0) for i in range(config["depth"])
        }
        if s < model.num_stages - 1:
            stage["norm"] = sd.chan_layer_norm(f"{prefix}.0.norm")
            stage["downsample"] = sd.conv2d(f"{prefix}.1.conv")
        params[f"stages_{s}"] = stage
    params["mlp_head"] = {"norm": sd.layer_norm("mlp_head.1")}
    if (head := sd.classifier("mlp_head.2", model.num_classes)) is not None:
        params["mlp_head"]["fc"] = head
    return model_variables(sd, {"params": params}, model)
