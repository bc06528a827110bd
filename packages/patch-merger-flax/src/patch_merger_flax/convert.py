"""Convert vit-pytorch ``vit_with_patch_merger`` weights (``ViT`` or a standalone ``PatchMerger``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from patch_merger_flax.patch_merger import PatchMerger
from patch_merger_flax.vit import ViT
from vit_layers_flax import (
    Attention,
    StateDict,
    model_variables,
    patch_embedding_params,
    transformer_params,
)


def patch_merger_params(sd: StateDict, prefix: str = "") -> dict[str, Any]:
    """The reference ``PatchMerger`` (``norm``, ``queries``) under ``prefix`` -> its params."""
    prefix = f"{prefix}." if prefix else ""
    return {"norm": sd.layer_norm(f"{prefix}norm"), "queries": sd[f"{prefix}queries"]}


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT | PatchMerger) -> dict[str, Any]:
    """A reference ``state_dict`` -> the variables for ``model.apply``: a :class:`ViT` for
    ``vit_with_patch_merger.ViT().state_dict()``, a standalone :class:`PatchMerger` for
    ``vit_with_patch_merger.PatchMerger().state_dict()``, with the torch module's
    hyperparameters. A ``num_classes=0`` :class:`ViT` has no ``mlp_head``: it takes a
    reference built with ``num_classes=0`` (whose ``Linear(dim, 0)`` is empty)."""
    sd = StateDict(state_dict)
    if isinstance(model, PatchMerger):
        sample = jax.ShapeDtypeStruct((1, 1, model.dim), jnp.float32)
        return model_variables(sd, {"params": patch_merger_params(sd)}, model, sample)

    projects_out = Attention(model.dim, model.heads, model.dim_head).projects_out
    transformer = transformer_params(
        sd, "transformer", model.depth, to_out="to_out.0" if projects_out else None
    )
    # the reference's layers.{i} from the merge on are the blocks that see the merged tokens
    for i in range(model.merge_layer, model.depth):
        transformer[f"merged_layers_{i - model.merge_layer}"] = transformer.pop(f"layers_{i}")
    transformer["patch_merger"] = patch_merger_params(sd, "transformer.patch_merger")
    params = {
        "to_patch_embedding": patch_embedding_params(sd, "to_patch_embedding"),
        "embedding": {"pos_embedding": sd["pos_embedding"][0]},  # (1, n + 1, dim) -> (n + 1, dim)
        "transformer": transformer,
        # mlp_head.0 is the mean Reduce
        "mlp_head": sd.classifier("mlp_head.1", model.num_classes),
    }
    # the configured size itself: a non-square one is not an InputSizes
    if params["mlp_head"] is None:  # num_classes=0: no classifier
        del params["mlp_head"]
    return model_variables(sd, {"params": params}, model)
