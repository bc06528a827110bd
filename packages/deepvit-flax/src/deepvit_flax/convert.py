"""Convert vit-pytorch ``deepvit.DeepViT`` weights into :class:`deepvit_flax.DeepViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from deepvit_flax.deepvit import DeepViT
from vit_layers_flax import StateDict, finalize, mlp_head_params, patch_embedding_params, transformer_params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: DeepViT) -> dict[str, Any]:
    """``torch_deepvit.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`DeepViT` with the same hyperparameters. Raises
    :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing missing,
    unexpected and mis-shaped entries. Read a checkpoint file with
    :func:`vit_layers_flax.load_torch_state_dict`.
    """
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
        "pos_embedding": sd["pos_embedding"],
        "cls_token": sd["cls_token"],
        "transformer": transformer,
        "mlp_head": mlp_head_params(sd),
    }
    sample = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
