"""Convert vit-pytorch ``twins_svt.TwinsSVT`` and timm ``Twins`` (``twins_svt_*``) weights into
:class:`twins_svt_flax.TwinsSVT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from twins_svt_flax.twins_svt import DIM_HEAD, HEADS, NUM_STAGES, TwinsSVT
from vit_layers_flax import (
    ConversionError,
    StateDict,
    adapt_input_channels,
    check_architecture,
    conv_feed_forward_params,
    model_variables,
)

#: the architecture options of vit-pytorch's Twins-SVT, as ``TwinsSVT`` fields (the defaults)
VIT_PYTORCH_ARCHITECTURE = dict(
    patch_norm=True,
    qkv_bias=False,
    norm_epsilon=1e-5,
    spatial_reduction=False,
    peg_after_local=False,
    last_stage_local=False,
    final_norm=False,
)
#: the original Twins-SVT's (timm's ``Twins`` with ``wss``) options, as ``TwinsSVT`` fields
TIMM_ARCHITECTURE = dict(
    patch_norm=False,
    qkv_bias=True,
    norm_epsilon=1e-6,
    spatial_reduction=True,
    peg_after_local=True,
    last_stage_local=True,
    pad_windows=True,
    final_norm=True,
)


def _patch_embedding(sd: StateDict, prefix: str, channels: int, patch_size: int) -> dict[str, Any]:
    """The reference's ``PatchEmbedding.proj`` (channel LayerNorm, 1x1 conv, channel LayerNorm)
    on patches flattened as ``(c p1 p2)`` -> the shared ``PatchEmbedding``, which flattens
    them as ``(p1 p2 c)``: the first norm and the projection's input rows are permuted."""

    def reorder(x: np.ndarray) -> np.ndarray:
        if x.shape[0] != channels * patch_size**2:  # left as it is, for model_variables to report
            return x
        x = np.moveaxis(x.reshape(channels, patch_size, patch_size, *x.shape[1:]), 0, 2)
        return x.reshape(-1, *x.shape[3:])

    patch_norm, proj = sd.chan_layer_norm(f"{prefix}.0"), sd.pointwise(f"{prefix}.1")
    return {
        "patch_norm": {k: reorder(v) for k, v in patch_norm.items()},
        "proj": {"kernel": reorder(proj["kernel"]), "bias": proj["bias"]},
        "norm": sd.chan_layer_norm(f"{prefix}.2"),
    }


def _attention(sd: StateDict, prefix: str, *, local: bool) -> dict[str, Any]:
    """``LocalAttention`` / ``GlobalAttention``: the local ``to_kv`` is a 1x1 convolution (a
    ``Dense``), the global one a strided convolution (a ``Conv``)."""
    return {
        "norm": sd.chan_layer_norm(f"{prefix}.norm"),
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
        "ff2": conv_feed_forward_params(sd, f"{prefix}.3.fn.net"),
    }
    if has_local:
        params["local_attn"] = _attention(sd, f"{prefix}.0.fn", local=True)
        params["ff1"] = conv_feed_forward_params(sd, f"{prefix}.1.fn.net")
    return params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: TwinsSVT) -> dict[str, Any]:
    """``torch_twins_svt.state_dict()`` -> the variables for ``model.apply`` (a
    :class:`TwinsSVT` of vit-pytorch's architecture: the default options, 8 heads of 64).

    Stage ``s`` is the reference's ``layers.{s}`` (``0`` patch embedding, ``1`` first
    transformer, ``2`` PEG, ``3`` transformer); the classifier is its ``layers.6``. A
    ``num_classes=0`` model has no ``to_logits``: it takes a reference built with
    ``num_classes=0`` (whose ``Linear(dim, 0)`` is empty).
    """
    check_architecture(model, VIT_PYTORCH_ARCHITECTURE, "from_vit_pytorch", "vit-pytorch")
    heads = {f"s{s}_heads": HEADS for s in range(1, NUM_STAGES + 1)}
    check_architecture(model, dict(heads, dim_head=DIM_HEAD), "from_vit_pytorch", "vit-pytorch")
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    channels = model.channels
    for s in range(NUM_STAGES):
        prefix, has_local, config = f"layers.{s}", s < NUM_STAGES - 1, model.stage_config(s + 1)
        stage: dict[str, Any] = {
            "patch_embedding": _patch_embedding(sd, f"{prefix}.0.proj", channels, config["patch_size"]),
            "first_transformer": {"layers_0": _block(sd, f"{prefix}.1.layers.0", has_local=has_local)},
            "peg": {"proj": sd.conv2d(f"{prefix}.2.proj.fn")},
        }
        if config["depth"]:
            stage["transformer"] = {
                f"layers_{i}": _block(sd, f"{prefix}.3.layers.{i}", has_local=has_local)
                for i in range(config["depth"])
            }
        params[f"stages_{s}"] = stage
        channels = config["emb_dim"]
    # layers.4 is the average pool, layers.5 the Rearrange
    if (head := sd.classifier(f"layers.{NUM_STAGES + 2}", model.num_classes)) is not None:
        params["to_logits"] = head
    return model_variables(sd, {"params": params}, model)


def _timm_patch_embedding(sd: StateDict, prefix: str, dim: int, patch_size: int, channels: int | None):
    """timm's ``PatchEmbed`` (``proj``, a ``(dim, c, p, p)`` convolution of stride ``p``;
    ``norm``) -> :class:`~twins_svt_flax.twins_svt.ConvPatchEmbedding`: the convolution as a
    Dense on ``(p1 p2 c)`` patches; ``channels`` (the first stage's) fits it to the images'
    channels as timm's ``adapt_input_conv`` does."""
    key = f"{prefix}.proj.weight"
    weight = sd[key]
    if weight.ndim != 4 or weight.shape[0] != dim or weight.shape[2:] != (patch_size, patch_size):
        raise ConversionError(
            f"{key}: expected shape ({dim}, channels, {patch_size}, {patch_size}), received shape {weight.shape}"
        )
    if channels is not None:
        weight = adapt_input_channels(weight, channels)
    return {
        "proj": {"kernel": weight.transpose(2, 3, 1, 0).reshape(-1, dim), "bias": sd[f"{prefix}.proj.bias"]},
        "norm": sd.layer_norm(f"{prefix}.norm"),
    }


def _timm_half(sd: StateDict, prefix: str, *, local: bool, reduces: bool) -> dict[str, Any]:
    """timm's ``Block`` (``norm1``, ``attn``, ``norm2``, ``mlp``) -> one half of a
    :class:`~twins_svt_flax.TwinsBlock`: the local attention and ``ff1`` (``LocallyGroupedAttn``,
    whose ``qkv`` is split into ``to_q`` and ``to_kv``), or the global attention and ``ff2``
    (``GlobalSubSampleAttn``: ``q``, ``kv`` and, where ``reduces``, its ``sr`` convolution and
    ``norm``)."""
    attn: dict[str, Any] = {
        "norm": sd.layer_norm(f"{prefix}.norm1"),
        "to_out": sd.linear(f"{prefix}.attn.proj"),
    }
    if local:
        qkv = sd.linear(f"{prefix}.attn.qkv")
        third = qkv["kernel"].shape[-1] // 3
        attn["to_q"] = {k: v[..., :third] for k, v in qkv.items()}
        attn["to_kv"] = {k: v[..., third:] for k, v in qkv.items()}
    else:
        attn["to_q"] = sd.linear(f"{prefix}.attn.q")
        attn["to_kv"] = sd.linear(f"{prefix}.attn.kv")
        if reduces:
            attn["reduce"] = sd.conv2d(f"{prefix}.attn.sr")
            attn["reduce_norm"] = sd.layer_norm(f"{prefix}.attn.norm")
    ff = {
        "norm": sd.layer_norm(f"{prefix}.norm2"),
        "fc1": sd.linear(f"{prefix}.mlp.fc1"),
        "fc2": sd.linear(f"{prefix}.mlp.fc2"),
    }
    return {"local_attn": attn, "ff1": ff} if local else {"global_attn": attn, "ff2": ff}


def from_timm(state_dict: Mapping[str, Any], model: TwinsSVT) -> dict[str, Any]:
    """A timm ``Twins`` ``state_dict`` of a Twins-SVT (``twins_svt_*``; the original
    checkpoints' names are timm's) -> the variables for ``model.apply`` (``model``: timm's
    architecture, :data:`TIMM_ARCHITECTURE` but ``pad_windows``, which changes no parameter,
    with the same sizes; the presets in :mod:`twins_svt_flax.presets`).

    timm's stage ``s`` has ``2 * (s*_depth + 1)`` blocks ``blocks.{s}.{b}``, alternately local
    (even ``b``) and global (odd ``b``): blocks ``2j`` and ``2j + 1`` are our ``TwinsBlock``
    ``j`` (``first_transformer/layers_0``, then ``transformer/layers_{j-1}``), with the PEG
    ``pos_block.{s}`` inside the first. The first patch convolution is fitted to
    ``model.channels`` as timm's loader fits its ``first_conv``
    (:func:`~vit_layers_flax.adapt_input_channels`). Nothing depends on the image size (no
    position embedding). Everything else must match: missing, unexpected and mis-shaped keys
    raise :class:`ConversionError`.
    """
    options = {k: v for k, v in TIMM_ARCHITECTURE.items() if k != "pad_windows"}
    check_architecture(model, options, "from_timm", "timm")
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    for s in range(NUM_STAGES):
        config = model.stage_config(s + 1)
        dim, reduces = config["emb_dim"], config["global_k"] > 1
        channels = model.channels if s == 0 else None

        def block(j: int, s: int = s, reduces: bool = reduces) -> dict[str, Any]:
            local = _timm_half(sd, f"blocks.{s}.{2 * j}", local=True, reduces=reduces)
            return {**local, **_timm_half(sd, f"blocks.{s}.{2 * j + 1}", local=False, reduces=reduces)}

        first = block(0)
        first["peg"] = {"proj": sd.conv2d(f"pos_block.{s}.proj.0")}
        stage: dict[str, Any] = {
            "patch_embedding": _timm_patch_embedding(
                sd, f"patch_embeds.{s}", dim, config["patch_size"], channels
            ),
            "first_transformer": {"layers_0": first},
        }
        if config["depth"]:
            stage["transformer"] = {f"layers_{j - 1}": block(j) for j in range(1, config["depth"] + 1)}
        params[f"stages_{s}"] = stage
    params["norm"] = sd.layer_norm("norm")
    if (head := sd.classifier("head", model.num_classes)) is not None:
        params["to_logits"] = head
    return model_variables(sd, {"params": params}, model)
