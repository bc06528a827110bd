"""Convert vit-pytorch ``crossformer.CrossFormer`` weights into :class:`crossformer_flax.CrossFormer` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from crossformer_flax.crossformer import CrossFormer
from vit_layers_flax import StateDict, conv_feed_forward_params, model_variables


def _attention(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``crossformer.Attention`` -> :class:`~crossformer_flax.LongShortDistanceAttention` params.

    ``to_qkv`` and ``to_out`` (1x1 convolutions) become Dense kernels; ``dpb`` is a
    ``Sequential`` whose Linear and LayerNorm layers sit at indices 0, 1, 3, 4, 6, 7 and 9
    (ReLUs in between).
    """
    dpb = {f"fc_{i}": sd.linear(f"{prefix}.dpb.{3 * i}") for i in range(4)}
    dpb |= {f"norm_{i}": sd.layer_norm(f"{prefix}.dpb.{3 * i + 1}") for i in range(3)}
    return {
        "norm": sd.chan_layer_norm(f"{prefix}.norm"),
        "to_qkv": sd.pointwise(f"{prefix}.to_qkv", bias=False),
        "to_out": sd.pointwise(f"{prefix}.to_out"),
        "dpb": dpb,
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: CrossFormer) -> dict[str, Any]:
    """``torch_crossformer.state_dict()`` -> the variables dict for ``model.apply``.

    Stage ``s`` is the reference's ``layers.{s}``: ``0`` the cross-scale embedding's
    ``convs`` (``stages_{s}/cel``), ``1`` the transformer, whose layer ``i``
    (``stages_{s}/layers_{i}``) holds ``0`` short attention, ``1`` feed-forward, ``2`` long
    attention, ``3`` feed-forward; ``to_logits.1`` is the classifier (none when
    ``model.num_classes == 0``). The non-persistent ``rel_pos_indices`` buffers are not in a
    ``state_dict``; the Flax model recomputes them.
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    for s, config in enumerate(model.stage_configs()):
        prefix = f"layers.{s}"
        stage: dict[str, Any] = {
            "cel": {
                f"convs_{j}": sd.conv2d(f"{prefix}.0.convs.{j}") for j in range(len(config["kernel_sizes"]))
            }
        }
        for i in range(config["depth"]):
            layer = f"{prefix}.1.layers.{i}"
            stage[f"layers_{i}"] = {
                "short_attn": _attention(sd, f"{layer}.0"),
                "short_ff": conv_feed_forward_params(sd, f"{layer}.1"),
                "long_attn": _attention(sd, f"{layer}.2"),
                "long_ff": conv_feed_forward_params(sd, f"{layer}.3"),
            }
        params[f"stages_{s}"] = stage
    if (head := sd.classifier("to_logits.1", model.num_classes)) is not None:
        params["to_logits"] = head
    side = model.input_sizes().smallest
    sample = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    return model_variables(sd, {"params": params}, model, sample)
