"""Convert vit-pytorch ``pit.PiT`` weights into :class:`pit_flax.PiT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pit_flax.pit import PiT
from vit_layers_flax import (
    Attention,
    StateDict,
    classifier_head_params,
    model_variables,
    transformer_params,
)


def pool_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``Pool`` -> :class:`~pit_flax.Pool` params."""
    return {
        "cls_ff": sd.linear(f"{prefix}.cls_ff"),
        "depthwise": sd.conv2d(f"{prefix}.downsample.net.0"),
        "pointwise": sd.conv2d(f"{prefix}.downsample.net.1"),
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: PiT) -> dict[str, Any]:
    """``torch_pit.state_dict()`` -> the variables for ``model.apply`` (a :class:`PiT` of the
    same hyperparameters). The reference's ``layers`` Sequential alternates stage
    transformers (``layers.{2i}`` -> ``stages_{i}``) and pools (``layers.{2i+1}`` ->
    ``pools_{i}``). With ``num_classes=0`` the head's LayerNorm is kept and its (empty)
    ``Linear(dim, 0)`` skipped."""
    sd = StateDict(state_dict)
    params: dict[str, Any] = {
        "to_patch_embedding": sd.linear("to_patch_embedding.2"),  # after Unfold and Rearrange
        "embedding": {
            "cls_token": sd["cls_token"][0],  # (1, 1, dim) -> (1, dim)
            "pos_embedding": sd["pos_embedding"][0],  # (1, n + 1, dim) -> (n + 1, dim)
        },
    }
    stages = model.stages
    for i, stage in enumerate(stages):
        projects_out = Attention(stage.dim, stage.heads, model.dim_head).projects_out
        params[f"stages_{i}"] = transformer_params(
            sd,
            f"layers.{2 * i}",
            stage.depth,
            to_out="to_out.0" if projects_out else None,
            final_norm=False,
        )
        if i < len(stages) - 1:
            params[f"pools_{i}"] = pool_params(sd, f"layers.{2 * i + 1}")
    params["mlp_head"] = classifier_head_params(sd, "mlp_head", num_classes=model.num_classes)
    return model_variables(sd, {"params": params}, model)
