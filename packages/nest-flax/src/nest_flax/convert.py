"""Convert vit-pytorch ``nest.NesT`` weights into :class:`nest_flax.NesT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from nest_flax.nest import NesT
from vit_layers_flax import StateDict, cast_tuple, finalize


def _local_transformer(sd: StateDict, prefix: str, depth: int) -> dict[str, Any]:
    """The reference's ``nest.Transformer`` (``pos_emb``; ``layers.{i}.0`` attention and
    ``layers.{i}.1`` feed-forward on 1x1 convolutions) -> ``LocalTransformer`` params."""
    params: dict[str, Any] = {"pos_emb": sd[f"{prefix}.pos_emb"]}
    for i in range(depth):
        attn, ff = f"{prefix}.layers.{i}.0", f"{prefix}.layers.{i}.1"
        params[f"layers_{i}"] = {
            "attn": {
                "norm": sd.chan_layer_norm_as_layer_norm(f"{attn}.norm"),
                "to_qkv": sd.pointwise(f"{attn}.to_qkv", bias=False),
                "to_out": sd.pointwise(f"{attn}.to_out.0"),
            },
            "ff": {
                "norm": sd.chan_layer_norm_as_layer_norm(f"{ff}.net.0"),
                "fc1": sd.pointwise(f"{ff}.net.1"),
                "fc2": sd.pointwise(f"{ff}.net.4"),
            },
        }
    return params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: NesT) -> dict[str, Any]:
    """``torch_nest.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`NesT` with the same hyperparameters. The reference's 1x1
    convolutions become Dense kernels, its channel LayerNorms on tokens become LayerNorm
    ``scale``/``bias``; the aggregation and head norms stay ``ChanLayerNorm`` ``g``/``b``.
    Raises :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing missing,
    unexpected and mis-shaped entries.
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {
        "to_patch_embedding": {
            "patch_norm": sd.chan_layer_norm_as_layer_norm("to_patch_embedding.1"),
            "proj": sd.pointwise("to_patch_embedding.2"),
            "norm": sd.chan_layer_norm_as_layer_norm("to_patch_embedding.3"),
        },
        "mlp_head": {"norm": sd.chan_layer_norm("mlp_head.0"), "fc": sd.linear("mlp_head.2")},
    }
    repeats = cast_tuple(model.block_repeats, model.num_hierarchies)
    for i, depth in enumerate(repeats):
        level = {"transformer": _local_transformer(sd, f"layers.{i}.0", depth)}
        if i < model.num_hierarchies - 1:
            level["aggregate"] = {
                "conv": sd.conv2d(f"layers.{i}.1.0"),
                "norm": sd.chan_layer_norm(f"layers.{i}.1.1"),
            }
        params[f"layers_{i}"] = level
    sample = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
