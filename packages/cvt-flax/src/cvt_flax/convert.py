"""Convert vit-pytorch ``cvt.CvT`` weights into :class:`cvt_flax.CvT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cvt_flax.cvt import CvT
from vit_layers_flax import StateDict, conv_feed_forward_params, model_variables


def _separable_conv(sd: StateDict, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
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
    attn = f"{prefix}.0"
    to_q, to_q_stats = _separable_conv(sd, f"{attn}.to_q")
    to_kv, to_kv_stats = _separable_conv(sd, f"{attn}.to_kv")
    params = {
        "attn": {
            "norm": sd.chan_layer_norm(f"{attn}.norm"),
            "to_q": to_q,
            "to_kv": to_kv,
            "to_out": sd.pointwise(f"{attn}.to_out.0"),
        },
        "ff": conv_feed_forward_params(sd, f"{prefix}.1.net"),
    }
    return params, {"attn": {"to_q": to_q_stats, "to_kv": to_kv_stats}}


def from_vit_pytorch(state_dict: Mapping[str, Any], model: CvT) -> dict[str, Any]:
    """``torch_cvt.state_dict()`` -> the variables (``params`` and ``batch_stats``) for ``model.apply``.

    Stage ``s`` is the reference's ``layers.{s}`` (``0`` embedding conv, ``1`` channel
    LayerNorm, ``2`` transformer); the BatchNorms' running statistics go to ``batch_stats``.
    A ``num_classes=0`` model has no ``to_logits``: it takes a reference built with
    ``num_classes=0`` (whose ``Linear(dim, 0)`` is empty).
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    batch_stats: dict[str, Any] = {}
    for s in range(3):
        prefix = f"layers.{s}"
        blocks = [_block(sd, f"{prefix}.2.layers.{i}") for i in range(model.stage_config(s + 1)["depth"])]
        params[f"stages_{s}"] = {
            "conv": sd.conv2d(f"{prefix}.0"),
            "norm": sd.chan_layer_norm(f"{prefix}.1"),
            "transformer": {f"layers_{i}": p for i, (p, _) in enumerate(blocks)},
        }
        if blocks:
            batch_stats[f"stages_{s}"] = {
                "transformer": {f"layers_{i}": b for i, (_, b) in enumerate(blocks)}
            }
    if (head := sd.classifier("to_logits.2", model.num_classes)) is not None:
        params["to_logits"] = head
    variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
    return model_variables(sd, variables, model)
