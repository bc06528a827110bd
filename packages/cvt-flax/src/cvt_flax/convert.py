"""Convert vit-pytorch ``cvt.CvT`` weights into :class:`cvt_flax.CvT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from cvt_flax.cvt import CvT
from vit_layers_flax import StateDict, finalize


def _depthwise_separable(sd: StateDict, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``DepthWiseConv2d`` (``net`` = depthwise conv, BatchNorm2d, 1 x 1 conv; no biases in
    CvT's attention) -> (params, batch_stats)."""
    bn, stats = sd.batch_norm(f"{prefix}.net.1")
    params = {
        "depthwise": sd.conv2d(f"{prefix}.net.0", bias=False),
        "bn": bn,
        "pointwise": sd.pointwise(f"{prefix}.net.2", bias=False),
    }
    return params, {"bn": stats}


def _block(sd: StateDict, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``Transformer.layers.{i}`` (``0`` attention, ``1`` feed-forward) -> (params, batch_stats)."""
    attn, ff = f"{prefix}.0", f"{prefix}.1"
    to_q, to_q_stats = _depthwise_separable(sd, f"{attn}.to_q")
    to_kv, to_kv_stats = _depthwise_separable(sd, f"{attn}.to_kv")
    params = {
        "attn": {
            "norm": sd.chan_layer_norm(f"{attn}.norm"),
            "to_q": to_q,
            "to_kv": to_kv,
            "to_out": sd.pointwise(f"{attn}.to_out.0"),
        },
        "ff": {
            "norm": sd.chan_layer_norm_as_layer_norm(f"{ff}.net.0"),
            "fc1": sd.pointwise(f"{ff}.net.1"),
            "fc2": sd.pointwise(f"{ff}.net.4"),
        },
    }
    return params, {"attn": {"to_q": to_q_stats, "to_kv": to_kv_stats}}


def from_vit_pytorch(state_dict: Mapping[str, Any], model: CvT) -> dict[str, Any]:
    """``torch_cvt.state_dict()`` -> the variables dict (``params`` and ``batch_stats``) for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`CvT` with the same hyperparameters. Stage ``s`` is the
    reference's ``layers.{s}`` (``0`` embedding conv, ``1`` channel LayerNorm, ``2``
    transformer); the BatchNorms' running statistics go to ``batch_stats``
    (``num_batches_tracked`` is dropped). Raises :class:`vit_layers_flax.ConversionError`
    (a ``ValueError``) listing missing, unexpected and mis-shaped entries.
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    batch_stats: dict[str, Any] = {}
    for s in range(3):
        prefix = f"layers.{s}"
        blocks = [_block(sd, f"{prefix}.2.layers.{i}") for i in range(model.stage_config(s + 1)["depth"])]
        params[f"layers_{s}"] = {
            "conv": sd.conv2d(f"{prefix}.0"),
            "norm": sd.chan_layer_norm(f"{prefix}.1"),
            "transformer": {f"layers_{i}": p for i, (p, _) in enumerate(blocks)},
        }
        if blocks:
            batch_stats[f"layers_{s}"] = {
                "transformer": {f"layers_{i}": b for i, (_, b) in enumerate(blocks)}
            }
    params["to_logits"] = sd.linear("to_logits.2")
    variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
    sample = jax.ShapeDtypeStruct((1, 32, 32, model.channels), jnp.float32)
    return finalize(sd, variables, model, sample)
