"""Convert vit-pytorch ``pit.PiT`` weights into :class:`pit_flax.PiT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from pit_flax.pit import PiT
from vit_layers_flax import StateDict, finalize, mlp_head_params, transformer_params


def pool_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``Pool`` -> :class:`~pit_flax.pool.Pool` params."""
    return {
        "cls_ff": sd.linear(f"{prefix}.cls_ff"),
        "downsample": {
            "depthwise": sd.conv2d(f"{prefix}.downsample.net.0"),
            "pointwise": sd.conv2d(f"{prefix}.downsample.net.1"),
        },
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: PiT) -> dict[str, Any]:
    """``torch_pit.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`PiT` with the same hyperparameters. The reference's ``layers``
    Sequential alternates stage transformers (``layers.{2i}``, without a final LayerNorm)
    and pools (``layers.{2i+1}``); a stage's attention has no ``to_out`` when it has one
    head as wide as the stage. Raises :class:`vit_layers_flax.ConversionError` (a
    ``ValueError``) listing missing, unexpected and mis-shaped entries. Read a checkpoint
    file with :func:`vit_layers_flax.load_torch_state_dict`.
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {
        "to_patch_embedding": sd.linear("to_patch_embedding.2"),  # after Unfold and Rearrange
        "cls_token": sd["cls_token"][0],  # (1, 1, dim) -> (1, dim)
        "pos_embedding": sd["pos_embedding"][0],  # (1, n + 1, dim) -> (n + 1, dim)
    }
    stages = model.stages
    for i, stage in enumerate(stages):
        projects_out = not (stage.heads == 1 and model.dim_head == stage.dim)
        params[f"layers_{2 * i}"] = transformer_params(
            sd,
            f"layers.{2 * i}",
            stage.depth,
            to_out="to_out.0" if projects_out else None,
            final_norm=False,
        )
        if i < len(stages) - 1:
            params[f"layers_{2 * i + 1}"] = pool_params(sd, f"layers.{2 * i + 1}")
    params["mlp_head"] = mlp_head_params(sd, "mlp_head")
    sample = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
