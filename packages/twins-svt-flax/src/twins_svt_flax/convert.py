"""Convert vit-pytorch ``twins_svt.TwinsSVT`` weights into :class:`twins_svt_flax.TwinsSVT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from twins_svt_flax.twins_svt import CHANNELS, NUM_STAGES, TwinsSVT
from vit_layers_flax import StateDict, finalize


def _feed_forward(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The conv ``FeedForward`` (``net`` = channel LayerNorm, 1x1 conv, GELU, Dropout, 1x1 conv,
    Dropout) -> the shared ``FeedForward``'s ``norm``, ``fc1``, ``fc2``."""
    return {
        "norm": sd.chan_layer_norm_as_layer_norm(f"{prefix}.net.0"),
        "fc1": sd.pointwise(f"{prefix}.net.1"),
        "fc2": sd.pointwise(f"{prefix}.net.4"),
    }


def _attention(sd: StateDict, prefix: str, *, local: bool) -> dict[str, Any]:
    """``LocalAttention`` / ``GlobalAttention`` -> ``norm``, ``to_q``, ``to_kv``, ``to_out``.

    The local ``to_kv`` is a 1x1 convolution (a ``Dense``); the global one a ``k x k``
    strided convolution (a ``vit_layers_flax.Conv``)."""
    return {
        "norm": sd.chan_layer_norm_as_layer_norm(f"{prefix}.norm"),
        "to_q": sd.pointwise(f"{prefix}.to_q", bias=False),
        "to_kv": (sd.pointwise if local else sd.conv2d)(f"{prefix}.to_kv", bias=False),
        "to_out": sd.pointwise(f"{prefix}.to_out.0"),
    }


def _block(sd: StateDict, prefix: str, *, has_local: bool) -> dict[str, Any]:
    """``Transformer.layers.{i}``: ``0`` local attention, ``1`` feed-forward, ``2`` global attention,
    ``3`` feed-forward, each inside a ``Residual`` (``.fn``); ``0`` and ``1`` are ``nn.Identity``
    without local attention."""
    params = {
        "global_attn": _attention(sd, f"{prefix}.2.fn", local=False),
        "ff2": _feed_forward(sd, f"{prefix}.3.fn"),
    }
    if has_local:
        params["local_attn"] = _attention(sd, f"{prefix}.0.fn", local=True)
        params["ff1"] = _feed_forward(sd, f"{prefix}.1.fn")
    return params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: TwinsSVT) -> dict[str, Any]:
    """``torch_twins_svt.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`TwinsSVT` with the same hyperparameters. Stage ``s`` is the
    reference's ``layers.{s}`` (``0`` patch embedding, ``1`` first transformer, ``2`` PEG,
    ``3`` transformer) and the classifier its ``layers.6``. The reference's 1x1
    convolutions become ``Dense`` kernels and its channel LayerNorms ``LayerNorm``
    ``scale``/``bias``. Raises :class:`vit_layers_flax.ConversionError` (a ``ValueError``)
    listing missing, unexpected and mis-shaped entries.
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    for s in range(NUM_STAGES):
        prefix, has_local = f"layers.{s}", s < NUM_STAGES - 1
        stage: dict[str, Any] = {
            "patch_embedding": {
                "patch_norm": sd.chan_layer_norm_as_layer_norm(f"{prefix}.0.proj.0"),
                "proj": sd.pointwise(f"{prefix}.0.proj.1"),
                "norm": sd.chan_layer_norm_as_layer_norm(f"{prefix}.0.proj.2"),
            },
            "first_transformer": {"layers_0": _block(sd, f"{prefix}.1.layers.0", has_local=has_local)},
            "peg": {"proj": sd.conv2d(f"{prefix}.2.proj.fn")},
        }
        depth = model.stage_config(s + 1)["depth"]
        if depth:
            stage["transformer"] = {
                f"layers_{i}": _block(sd, f"{prefix}.3.layers.{i}", has_local=has_local) for i in range(depth)
            }
        params[f"layers_{s}"] = stage
    # layers.4 is the average pool, layers.5 the Rearrange
    params["to_logits"] = sd.linear(f"layers.{NUM_STAGES + 2}")
    side = model.min_image_size
    sample = jax.ShapeDtypeStruct((1, side, side, CHANNELS), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
