"""Convert vit-pytorch ``regionvit.RegionViT`` weights into :class:`regionvit_flax.RegionViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from regionvit_flax.regionvit import RegionViT
from vit_layers_flax import StateDict, attention_params, model_variables


def _r2l_transformer(sd: StateDict, prefix: str, depth: int) -> dict[str, Any]:
    """``R2LTransformer`` (``local_rel_pos_bias`` embedding; ``layers.{j}.0`` attention,
    ``layers.{j}.1`` feed-forward ``Sequential``: LayerNorm 0, Linear 1, Linear 4)."""
    params: dict[str, Any] = {"local_rel_pos_bias": sd[f"{prefix}.local_rel_pos_bias.weight"]}
    for j in range(depth):
        ff = f"{prefix}.layers.{j}.1"
        params[f"layers_{j}"] = {
            "attn": attention_params(sd, f"{prefix}.layers.{j}.0"),
            "ff": {
                "norm": sd.layer_norm(f"{ff}.0"),
                "fc1": sd.linear(f"{ff}.1"),
                "fc2": sd.linear(f"{ff}.4"),
            },
        }
    return params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: RegionViT) -> dict[str, Any]:
    """``torch_regionvit.state_dict()`` -> the variables for ``model.apply``.

    Stage ``i`` (``stages_{i}``) is the reference's ``layers.{i}`` (``0.conv`` downsampling,
    ``1.proj`` PEG, ``2`` transformer); the regional encoder's 1x1 convolution becomes a Dense
    kernel. A ``num_classes=0`` model has no ``to_logits/fc``: it takes a reference built with
    ``num_classes=0`` (an empty ``Linear``).
    """
    sd = StateDict(state_dict)
    if model.tokenize_local_3_conv:
        local_encoder = {
            "conv1": sd.conv2d("local_encoder.0"),
            "norm1": sd.chan_layer_norm("local_encoder.1"),
            "conv2": sd.conv2d("local_encoder.3"),
            "norm2": sd.chan_layer_norm("local_encoder.4"),
            "conv3": sd.conv2d("local_encoder.6"),
        }
    else:
        local_encoder = sd.conv2d("local_encoder")
    params: dict[str, Any] = {
        "local_encoder": local_encoder,
        "region_encoder": sd.pointwise("region_encoder.1"),
    }
    for i, depth in enumerate(model.depths):
        stage: dict[str, Any] = {"transformer": _r2l_transformer(sd, f"layers.{i}.2", depth)}
        if i > 0:
            stage["downsample"] = sd.conv2d(f"layers.{i}.0.conv")
            if model.use_peg:
                stage["peg"] = {"proj": sd.conv2d(f"layers.{i}.1.proj")}
        params[f"stages_{i}"] = stage
    # to_logits = Sequential(Reduce, LayerNorm, Linear)
    params["to_logits"] = {"norm": sd.layer_norm("to_logits.1")}
    if (head := sd.classifier("to_logits.2", model.num_classes)) is not None:
        params["to_logits"]["fc"] = head
    side = model.input_sizes().smallest
    sample = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    return model_variables(sd, {"params": params}, model, sample)
