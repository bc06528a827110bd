"""Convert vit-pytorch ``vit.ViT`` weights into :class:`vision_transformer_flax.ViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vision_transformer_flax.vit import ViT
from vit_layers_flax import StateDict, finalize, pair, patch_embedding_params, transformer_params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT) -> dict[str, Any]:
    """``torch_vit.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`ViT` with the same hyperparameters. Raises
    :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing missing,
    unexpected and mis-shaped entries. Read a checkpoint file with
    :func:`vit_layers_flax.load_torch_state_dict`.
    """
    sd = StateDict(state_dict)
    projects_out = not (model.heads == 1 and model.dim_head == model.dim)
    params = {
        "to_patch_embedding": patch_embedding_params(sd, "to_patch_embedding"),
        "cls_token": sd["cls_token"],
        "pos_embedding": sd["pos_embedding"],
        "transformer": transformer_params(
            sd, "transformer", model.depth, to_out="to_out.0" if projects_out else None
        ),
    }
    if model.num_classes > 0:
        params["mlp_head"] = sd.linear("mlp_head")
    sample = jax.ShapeDtypeStruct((1, *pair(model.image_size), model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
