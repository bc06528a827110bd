"""Convert vit-pytorch ``simple_vit.SimpleViT`` weights into :class:`SimpleViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simple_vit_flax.simple_vit import SimpleViT
from vit_layers_flax import (
    StateDict,
    model_variables,
    patch_embedding_params,
    transformer_params,
)


def from_vit_pytorch(state_dict: Mapping[str, Any], model: SimpleViT) -> dict[str, Any]:
    """``torch_simple_vit.state_dict()`` -> the variables for ``model.apply`` (``model``: the
    :class:`SimpleViT` with the same hyperparameters)."""
    sd = StateDict(state_dict)
    params = {
        "to_patch_embedding": patch_embedding_params(sd, "to_patch_embedding"),
        # SimpleViT's attention output is a bare bias-free Linear; its FeedForward has
        # no dropout layers, so the second Linear is net.3.
        "transformer": transformer_params(
            sd, "transformer", model.depth, to_out="to_out", out_bias=False, fc2_index=3
        ),
    }
    if (head := sd.classifier("linear_head", model.num_classes)) is not None:
        params["linear_head"] = head
    return model_variables(sd, {"params": params}, model)
