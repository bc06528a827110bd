"""Convert vit-pytorch ``vit.ViT`` weights into :class:`vision_transformer_flax.ViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vision_transformer_flax.vit import ViT
from vit_layers_flax import (
    Attention,
    ConversionError,
    StateDict,
    model_variables,
    patch_embedding_params,
    transformer_params,
)


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT) -> dict[str, Any]:
    """``torch_vit.state_dict()`` -> the variables for ``model.apply`` (``model``: the
    :class:`ViT` with the same hyperparameters)."""
    sd = StateDict(state_dict)
    embedding = {"pos_embedding": sd["pos_embedding"]}
    cls_token = sd["cls_token"]  # (0, dim) with pool='mean': the reference keeps an empty one
    if model.pool == "cls":
        embedding["cls_token"] = cls_token
    elif cls_token.shape != (0, model.dim):
        raise ConversionError(f"cls_token: expected shape (0, {model.dim}), received shape {cls_token.shape}")
    attention = Attention(model.dim, heads=model.heads, dim_head=model.dim_head)
    params = {
        "to_patch_embedding": patch_embedding_params(sd, "to_patch_embedding"),
        "embedding": embedding,
        "transformer": transformer_params(
            sd, "transformer", model.depth, to_out="to_out.0" if attention.projects_out else None
        ),
    }
    if model.num_classes > 0:
        params["mlp_head"] = sd.linear("mlp_head")
    return model_variables(sd, {"params": params}, model)
