"""Convert vit-pytorch ``cvt.CvT`` and Hugging Face ``CvtForImageClassification`` weights into
:class:`cvt_flax.CvT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cvt_flax.cvt import CvT
from vit_layers_flax import (
    ConversionError,
    StateDict,
    adapt_input_channels,
    check_architecture,
    conv_feed_forward_params,
    model_variables,
)

#: the architecture options of vit-pytorch's CvT and of the original one (Hugging Face's), as
#: ``CvT`` fields (the embedding paddings are checked apart: vit-pytorch's are ``kernel // 2``)
VIT_PYTORCH_OPTIONS = dict(
    qkv_bias=False, separate_kv=False, full_dim_scale=False, cls_token=False, final_norm=False
)
TRANSFORMERS_OPTIONS = dict(separate_kv=True, full_dim_scale=True, final_norm=True)


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
    check_architecture(model, VIT_PYTORCH_OPTIONS, "from_vit_pytorch", "vit-pytorch")
    paddings = {
        f"s{s}_emb_padding": getattr(model, f"s{s}_emb_padding")
        for s in (1, 2, 3)
        if model.stage_config(s)["emb_padding"] != model.stage_config(s)["emb_kernel"] // 2
    }
    if paddings:
        raise ConversionError(
            "from_vit_pytorch: expected a CvT whose embeddings pad emb_kernel // 2 (vit-pytorch's "
            "architecture: s*_emb_padding=None), received "
            + ", ".join(f"{k}={v!r}" for k, v in paddings.items())
        )
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


def _hf_projection(
    sd: StateDict, prefix: str, which: str, bias: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``CvtSelfAttention``'s ``convolution_projection_{which}`` (depthwise conv, BatchNorm)
    and ``projection_{which}`` (Linear) -> a :class:`~cvt_flax.DepthwiseSeparableConv`'s
    (params, batch_stats)."""
    conv = f"{prefix}.convolution_projection_{which}.convolution_projection"
    bn, stats = sd.batch_norm(f"{conv}.normalization")
    params = {
        "depthwise": sd.conv2d(f"{conv}.convolution", bias=False),
        "bn": bn,
        "pointwise": sd.linear(f"{prefix}.projection_{which}", bias=bias),
    }
    return params, {"bn": stats}


def _hf_layer(sd: StateDict, prefix: str, qkv_bias: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """``CvtLayer`` -> a ``TransformerBlock`` of ``ConvAttention(separate_kv=True)`` (params,
    batch_stats)."""
    attn = f"{prefix}.attention.attention"
    params: dict[str, Any] = {"attn": {"norm": sd.layer_norm(f"{prefix}.layernorm_before")}}
    stats: dict[str, Any] = {"attn": {}}
    for ours, theirs in (("to_q", "query"), ("to_k", "key"), ("to_v", "value")):
        params["attn"][ours], stats["attn"][ours] = _hf_projection(sd, attn, theirs, qkv_bias)
    params["attn"]["to_out"] = sd.linear(f"{prefix}.attention.output.dense")
    params["ff"] = {
        "norm": sd.layer_norm(f"{prefix}.layernorm_after"),
        "fc1": sd.linear(f"{prefix}.intermediate.dense"),
        "fc2": sd.linear(f"{prefix}.output.dense"),
    }
    return params, stats


def from_transformers(state_dict: Mapping[str, Any], model: CvT) -> dict[str, Any]:
    """A Hugging Face ``CvtForImageClassification`` ``state_dict`` (the ``microsoft/cvt-*``
    checkpoints' ``pytorch_model.bin``) -> the variables (``params`` and ``batch_stats``) for
    ``model.apply``.

    ``model`` has the original CvT's architecture: ``separate_kv=True, full_dim_scale=True,
    final_norm=True``, the checkpoint's embedding paddings (``CvtConfig.patch_padding``, which
    no weight shape shows: ``(2, 1, 1)`` in every published one), ``qkv_bias`` and
    ``cls_token`` as the checkpoint has them (``CvtConfig.qkv_bias``, ``cls_token`` in the last
    stage), and its sizes, with the heads' 64 channels (``embed_dim == 64 * num_heads``; the
    presets in :mod:`cvt_flax.presets`). Stage ``s`` is ``cvt.encoder.stages.{s}``; the
    BatchNorms' running statistics go to ``batch_stats``; the final ``layernorm`` is ``norm``
    and ``classifier`` ``to_logits`` (for a ``num_classes=0`` model the checkpoint has none, or
    an empty one). The first convolution is fitted to ``model.channels`` as timm's loaders fit
    theirs (:func:`~vit_layers_flax.adapt_input_channels`); the model takes any image size.
    Missing, unexpected and mis-shaped keys raise :class:`~vit_layers_flax.ConversionError`.
    """
    check_architecture(model, TRANSFORMERS_OPTIONS, "from_transformers", "Hugging Face transformers' CvT")
    sd = StateDict(state_dict)
    token = "cvt.encoder.stages.2.cls_token"
    if (token in sd) != model.cls_token:
        has = "has a class token" if token in sd else "has no class token"
        raise ConversionError(f"the state_dict {has} ({token}), the model has cls_token={model.cls_token}")
    params: dict[str, Any] = {}
    batch_stats: dict[str, Any] = {}
    for s in range(3):
        prefix = f"cvt.encoder.stages.{s}"
        embedding = f"{prefix}.embedding.convolution_embeddings"
        conv = sd.conv2d(f"{embedding}.projection")
        if s == 0:  # (kh, kw, channels, dim)
            weight = adapt_input_channels(conv["kernel"].transpose(3, 2, 0, 1), model.channels)
            conv["kernel"] = weight.transpose(2, 3, 1, 0)
        blocks = [
            _hf_layer(sd, f"{prefix}.layers.{i}", model.qkv_bias)
            for i in range(model.stage_config(s + 1)["depth"])
        ]
        params[f"stages_{s}"] = {
            "conv": conv,
            "norm": sd.layer_norm(f"{embedding}.normalization"),
            "transformer": {f"layers_{i}": p for i, (p, _) in enumerate(blocks)},
        }
        if s == 2 and model.cls_token:
            params[f"stages_{s}"]["cls_token"] = sd[token].reshape(1, -1)  # (1, 1, dim) -> (1, dim)
        if blocks:
            batch_stats[f"stages_{s}"] = {
                "transformer": {f"layers_{i}": b for i, (_, b) in enumerate(blocks)}
            }
    params["norm"] = sd.layer_norm("layernorm")
    if (head := sd.classifier("classifier", model.num_classes)) is not None:
        params["to_logits"] = head
    variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
    return model_variables(sd, variables, model)
