"""Convert vit-pytorch ``crossformer.CrossFormer`` weights into :class:`crossformer_flax.CrossFormer` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from crossformer_flax.crossformer import CrossFormer
from vit_layers_flax import ConversionError, StateDict, finalize


def _attention(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``crossformer.Attention`` -> :class:`~crossformer_flax.WindowAttention` params.

    ``norm`` keeps the channel LayerNorm's ``g``/``b``; ``to_qkv`` and ``to_out`` (1x1
    convolutions) become Dense kernels; ``dpb`` is a ``Sequential`` whose Linear and
    LayerNorm layers sit at indices 0, 1, 3, 4, 6, 7 and 9 (ReLUs in between).
    """
    dpb = {f"fc_{i}": sd.linear(f"{prefix}.dpb.{3 * i}") for i in range(4)}
    dpb |= {f"norm_{i}": sd.layer_norm(f"{prefix}.dpb.{3 * i + 1}") for i in range(3)}
    return {
        "norm": sd.chan_layer_norm(f"{prefix}.norm"),
        "to_qkv": sd.pointwise(f"{prefix}.to_qkv", bias=False),
        "to_out": sd.pointwise(f"{prefix}.to_out"),
        "dpb": dpb,
    }


def _feed_forward(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``FeedForward`` ``Sequential`` (channel LayerNorm, 1x1 conv, GELU,
    Dropout, 1x1 conv) -> :class:`vit_layers_flax.FeedForward` params."""
    return {
        "norm": sd.chan_layer_norm_as_layer_norm(f"{prefix}.0"),
        "fc1": sd.pointwise(f"{prefix}.1"),
        "fc2": sd.pointwise(f"{prefix}.4"),
    }


def _sample_side(model: CrossFormer, limit: int = 1 << 14) -> int:
    """The smallest image side the model takes (its parameters do not depend on the size)."""
    for side in range(1, limit):
        try:
            model._check_stage_sizes(jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32))
        except ValueError:
            continue
        return side
    raise ConversionError(f"no image side below {limit} fits every stage of {model!r}")


def from_vit_pytorch(state_dict: Mapping[str, Any], model: CrossFormer) -> dict[str, Any]:
    """``torch_crossformer.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`CrossFormer` with the same hyperparameters. Stage ``s`` is the
    reference's ``layers.{s}`` (``0`` the cross-scale embedding's ``convs``, ``1`` the
    transformer, whose layer ``i`` holds ``0`` short attention, ``1`` feed-forward, ``2``
    long attention, ``3`` feed-forward); ``to_logits.1`` is the classifier. The
    non-persistent ``rel_pos_indices`` buffers are not in a ``state_dict``; the Flax model
    recomputes them. Raises :class:`vit_layers_flax.ConversionError` (a ``ValueError``)
    listing missing, unexpected and mis-shaped entries.
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    for s, config in enumerate(model.stage_configs()):
        prefix = f"layers.{s}"
        layers = {}
        for i in range(config["depth"]):
            layer = f"{prefix}.1.layers.{i}"
            layers[f"layers_{i}"] = {
                "short_attn": _attention(sd, f"{layer}.0"),
                "short_ff": _feed_forward(sd, f"{layer}.1"),
                "long_attn": _attention(sd, f"{layer}.2"),
                "long_ff": _feed_forward(sd, f"{layer}.3"),
            }
        convs = {f"convs_{j}": sd.conv2d(f"{prefix}.0.convs.{j}") for j in range(len(config["kernel_sizes"]))}
        params[f"layers_{s}"] = {"cel": convs, "transformer": layers}
    params["to_logits"] = sd.linear("to_logits.1")
    side = _sample_side(model)
    sample = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
