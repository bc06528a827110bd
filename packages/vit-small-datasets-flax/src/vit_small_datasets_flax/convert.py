"""Convert vit-pytorch ``vit_for_small_dataset`` weights (``ViT`` or ``SPT``) into Flax variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_layers_flax import (
    StateDict,
    classifier_head_params,
    model_variables,
    transformer_params,
)
from vit_small_datasets_flax.spt import SPT
from vit_small_datasets_flax.vit import ViT


def _without_batch_axis(value: np.ndarray) -> np.ndarray:
    """The reference's ``(1, n, dim)`` token parameters as ``(n, dim)`` (other shapes pass,
    for :func:`~vit_layers_flax.model_variables` to report)."""
    return value[0] if value.shape[:1] == (1,) else value


def spt_params(sd: StateDict, prefix: str = "") -> dict[str, Any]:
    """The reference's ``SPT`` (``to_patch_tokens`` = Rearrange, LayerNorm, Linear) -> :class:`SPT` params."""
    return {
        "patch_norm": sd.layer_norm(f"{prefix}to_patch_tokens.1"),
        "proj": sd.linear(f"{prefix}to_patch_tokens.2"),
    }


def vit_params(sd: StateDict, model: ViT) -> dict[str, Any]:
    """The reference's ``ViT`` -> :class:`ViT` params (the shared stack, plus each LSA's temperature)."""
    transformer = transformer_params(sd, "transformer", model.depth, to_out="to_out.0", final_norm=False)
    for i in range(model.depth):
        transformer[f"layers_{i}"]["attn"]["temperature"] = sd[f"transformer.layers.{i}.0.temperature"]
    return {
        "to_patch_embedding": spt_params(sd, "to_patch_embedding."),
        "embedding": {
            "cls_token": _without_batch_axis(sd["cls_token"]),
            "pos_embedding": _without_batch_axis(sd["pos_embedding"]),
        },
        "transformer": transformer,
        "mlp_head": classifier_head_params(sd, num_classes=model.num_classes),
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT | SPT) -> dict[str, Any]:
    """``torch_model.state_dict()`` -> the variables for ``model.apply``.

    ``model`` is the :class:`ViT` (for a reference ``vit_for_small_dataset.ViT``) or the
    :class:`SPT` (for a standalone reference ``SPT``) with the same hyperparameters.
    """
    sd = StateDict(state_dict)
    if isinstance(model, SPT):
        params = spt_params(sd)
    elif isinstance(model, ViT):
        params = vit_params(sd, model)
    else:
        raise TypeError(f"from_vit_pytorch converts to ViT or SPT, received {type(model).__name__}")
    return model_variables(sd, {"params": params}, model)
