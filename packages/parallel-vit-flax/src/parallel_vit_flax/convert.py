"""Convert vit-pytorch ``parallel_vit.ViT`` weights into :class:`parallel_vit_flax.ViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from parallel_vit_flax.parallel_vit import ViT
from vit_layers_flax import StateDict, attention_params, feed_forward_params, finalize, mlp_head_params, pair


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT) -> dict[str, Any]:
    """``torch_parallel_vit.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`ViT` with the same hyperparameters. Raises
    :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing missing,
    unexpected and mis-shaped entries. Read a checkpoint file with
    :func:`vit_layers_flax.load_torch_state_dict`.
    """
    sd = StateDict(state_dict)
    to_out = None if model.heads == 1 and model.dim_head == model.dim else "to_out.0"
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
        "pos_embedding": sd["pos_embedding"],
        "cls_token": sd["cls_token"],
        "transformer": transformer,
        "mlp_head": mlp_head_params(sd),
    }
    sample = jax.ShapeDtypeStruct((1, *pair(model.image_size), model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
