"""Convert vit-pytorch ``parallel_vit.ViT`` weights into :class:`parallel_vit_flax.ViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from parallel_vit_flax.parallel_vit import ViT
from vit_layers_flax import (
    Attention,
    StateDict,
    attention_params,
    classifier_head_params,
    feed_forward_params,
    model_variables,
)


def _without_batch_axis(value: np.ndarray) -> np.ndarray:
    """The reference's ``(1, n, dim)`` token parameters as ``(n, dim)`` (other shapes pass,
    for :func:`~vit_layers_flax.model_variables` to report)."""
    return value[0] if value.shape[:1] == (1,) else value


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT) -> dict[str, Any]:
    """``torch_parallel_vit.state_dict()`` -> the variables for ``model.apply`` (``model``: the
    :class:`ViT` with the same hyperparameters)."""
    sd = StateDict(state_dict)
    attention = Attention(model.dim, heads=model.heads, dim_head=model.dim_head)
    to_out = "to_out.0" if attention.projects_out else None
    branches = range(model.num_parallel_branches)
    transformer = {
        f"layers_{i}": {
            # layers.{i}.0 / .1 are the Parallel attention / feed-forward groups; .fns.{j} a branch
            **{
                f"attn_{j}": attention_params(sd, f"transformer.layers.{i}.0.fns.{j}", to_out=to_out)
                for j in branches
            },
            **{f"ff_{j}": feed_forward_params(sd, f"transformer.layers.{i}.1.fns.{j}") for j in branches},
        }
        for i in range(model.depth)
    }
    params = {
        "to_patch_embedding": sd.linear("to_patch_embedding.1"),  # .0 is the Rearrange
        "embedding": {
            "cls_token": _without_batch_axis(sd["cls_token"]),
            "pos_embedding": _without_batch_axis(sd["pos_embedding"]),
        },
        "transformer": transformer,
        "mlp_head": classifier_head_params(sd, num_classes=model.num_classes),
    }
    return model_variables(sd, {"params": params}, model)
