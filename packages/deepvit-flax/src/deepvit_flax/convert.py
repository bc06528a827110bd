"""Convert vit-pytorch ``deepvit.DeepViT`` weights into :class:`deepvit_flax.DeepViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from deepvit_flax.deepvit import DeepViT
from vit_layers_flax import (
    StateDict,
    classifier_head_params,
    model_variables,
    patch_embedding_params,
    transformer_params,
)


def _without_batch_axis(value: np.ndarray) -> np.ndarray:
    """The reference's ``(1, n, dim)`` token parameters as ``(n, dim)`` (other shapes pass,
    for :func:`~vit_layers_flax.model_variables` to report)."""
    return value[0] if value.shape[:1] == (1,) else value


def from_vit_pytorch(state_dict: Mapping[str, Any], model: DeepViT) -> dict[str, Any]:
    """``torch_deepvit.state_dict()`` -> the variables for ``model.apply`` (``model``: the
    :class:`DeepViT` with the same hyperparameters)."""
    sd = StateDict(state_dict)
    # DeepViT always projects the attention output (to_out.0) and has no final norm.
    transformer = transformer_params(sd, "transformer", model.depth, to_out="to_out.0", final_norm=False)
    for i in range(model.depth):
        prefix = f"transformer.layers.{i}.0"
        transformer[f"layers_{i}"]["attn"].update(
            reattn_weights=sd[f"{prefix}.reattn_weights"],  # (heads, heads), used as h -> g
            reattn_norm=sd.layer_norm(f"{prefix}.reattn_norm.1"),  # .0/.2 are Rearranges
        )
    params = {
        "to_patch_embedding": patch_embedding_params(sd, "to_patch_embedding"),
        "embedding": {
            "cls_token": _without_batch_axis(sd["cls_token"]),
            "pos_embedding": _without_batch_axis(sd["pos_embedding"]),
        },
        "transformer": transformer,
        "mlp_head": classifier_head_params(sd, num_classes=model.num_classes),
    }
    return model_variables(sd, {"params": params}, model)
