"""Convert vit-pytorch ``vit_for_small_dataset`` weights (``ViT`` or ``SPT``) into Flax variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vit_layers_flax import StateDict, finalize, mlp_head_params, pair, transformer_params
from vit_small_datasets_flax.spt import SPT
from vit_small_datasets_flax.vit import ViT


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
        "cls_token": sd["cls_token"],
        "pos_embedding": sd["pos_embedding"],
        "transformer": transformer,
        "mlp_head": mlp_head_params(sd),
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT | SPT) -> dict[str, Any]:
    """``torch_model.state_dict()`` -> the variables dict for ``model.apply``.

    ``model`` is the :class:`ViT` (for a reference ``vit_for_small_dataset.ViT``) or the
    :class:`SPT` (for a standalone reference ``SPT``) with the same hyperparameters;
    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported).
    Raises :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing missing,
    unexpected and mis-shaped entries. Read a checkpoint file with
    :func:`vit_layers_flax.load_torch_state_dict`.
    """
    sd = StateDict(state_dict)
    if isinstance(model, SPT):
        params = spt_params(sd)
        image_size = pair(model.patch_size)  # SPT takes any multiple of the patch size
    elif isinstance(model, ViT):
        params = vit_params(sd, model)
        image_size = pair(model.image_size)
    else:
        raise TypeError(f"from_vit_pytorch converts to ViT or SPT, received {type(model).__name__}")
    sample = jax.ShapeDtypeStruct((1, *image_size, model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
