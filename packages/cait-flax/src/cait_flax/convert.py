"""Convert vit-pytorch ``cait.CaiT`` and timm ``Cait`` weights into :class:`cait_flax.CaiT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cait_flax.cait import CaiT
from vit_layers_flax import (
    ConversionError,
    StateDict,
    adapt_input_channels,
    check_architecture,
    classifier_head_params,
    feed_forward_params,
    model_variables,
    patch_embedding_params,
    resample_position_embedding,
)


def _talking_heads_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``Attention`` -> :class:`cait_flax.TalkingHeadsAttention` params."""
    return {
        "norm": sd.layer_norm(f"{prefix}.norm"),
        "to_q": sd.linear(f"{prefix}.to_q", bias=False),
        "to_kv": sd.linear(f"{prefix}.to_kv", bias=False),
        "mix_heads_pre_attn": sd[f"{prefix}.mix_heads_pre_attn"],
        "mix_heads_post_attn": sd[f"{prefix}.mix_heads_post_attn"],
        "to_out": sd.linear(f"{prefix}.to_out.0"),
    }


def _transformer_params(sd: StateDict, prefix: str, depth: int) -> dict[str, Any]:
    """``layers.{i}.0`` = LayerScale(Attention), ``layers.{i}.1`` = LayerScale(FeedForward);
    the ``(1, 1, dim)`` scales become ``(dim,)``."""
    return {
        f"layers_{i}": {
            "attn": _talking_heads_params(sd, f"{prefix}.layers.{i}.0.fn"),
            "attn_scale": {"scale": sd[f"{prefix}.layers.{i}.0.scale"].reshape(-1)},
            "ff": feed_forward_params(sd, f"{prefix}.layers.{i}.1.fn"),
            "ff_scale": {"scale": sd[f"{prefix}.layers.{i}.1.scale"].reshape(-1)},
        }
        for i in range(depth)
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: CaiT) -> dict[str, Any]:
    """``torch_cait.state_dict()`` -> the variables for ``model.apply`` (a :class:`CaiT` of the
    same hyperparameters). The reference's ``pos_embedding`` ``(1, N, dim)`` and
    ``cls_token`` ``(1, 1, dim)`` lose their leading axis. With ``num_classes=0`` the head's
    LayerNorm is kept and its (empty) ``Linear(dim, 0)`` skipped."""
    sd = StateDict(state_dict)
    params = {
        "to_patch_embedding": patch_embedding_params(sd, "to_patch_embedding"),
        "embedding": {"pos_embedding": sd["pos_embedding"][0]},
        "cls_token": sd["cls_token"][0],
        "patch_transformer": _transformer_params(sd, "patch_transformer", model.depth),
        "cls_transformer": _transformer_params(sd, "cls_transformer", model.cls_depth),
        "mlp_head": classifier_head_params(sd, num_classes=model.num_classes),
    }
    return model_variables(sd, {"params": params}, model)


#: the options of :class:`CaiT` that make the paper's (timm's) architecture, and their values
TIMM_ARCHITECTURE = dict(
    patch_norms=False,
    qkv_bias=True,
    talking_heads_bias=True,
    cls_talking_heads=False,
    cls_norm_context=True,
)


def _weight(sd: StateDict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``sd[key]``, checked to have ``shape``."""
    value = sd[key]
    if value.shape != shape:
        raise ConversionError(f"{key}: expected shape {shape}, received shape {value.shape}")
    return value


def _timm_block(sd: StateDict, prefix: str, model: CaiT, *, class_attention: bool) -> dict[str, Any]:
    """timm's ``LayerScaleBlock`` (talking heads, fused ``qkv``) or ``LayerScaleBlockClassAttn``
    (plain class attention, separate ``q``, ``k``, ``v``) at ``prefix`` -> a
    :class:`LayerScaleBlock`'s params."""
    dim, inner = model.dim, model.heads * model.dim_head
    attn = f"{prefix}.attn"
    if class_attention:
        q = sd.linear(f"{attn}.q")
        k, v = sd.linear(f"{attn}.k"), sd.linear(f"{attn}.v")
        kv = {name: np.concatenate([k[name], v[name]], axis=-1) for name in ("kernel", "bias")}
        mixing = {}
    else:
        weight = _weight(sd, f"{attn}.qkv.weight", (3 * inner, dim))
        bias = _weight(sd, f"{attn}.qkv.bias", (3 * inner,))
        q = {"kernel": weight[:inner].T, "bias": bias[:inner]}
        kv = {"kernel": weight[inner:].T, "bias": bias[inner:]}
        mixing = {}
        for ours, theirs in (("mix_heads_pre_attn", "proj_l"), ("mix_heads_post_attn", "proj_w")):
            mixing[ours] = _weight(sd, f"{attn}.{theirs}.weight", (model.heads, model.heads)).T
            mixing[f"{ours}_bias"] = _weight(sd, f"{attn}.{theirs}.bias", (model.heads,))
    return {
        "attn": {
            "norm": sd.layer_norm(f"{prefix}.norm1"),
            "to_q": q,
            "to_kv": kv,
            "to_out": sd.linear(f"{attn}.proj"),
            **mixing,
        },
        "attn_scale": {"scale": sd[f"{prefix}.gamma_1"]},
        "ff": {
            "norm": sd.layer_norm(f"{prefix}.norm2"),
            "fc1": sd.linear(f"{prefix}.mlp.fc1"),
            "fc2": sd.linear(f"{prefix}.mlp.fc2"),
        },
        "ff_scale": {"scale": sd[f"{prefix}.gamma_2"]},
    }


def from_timm(state_dict: Mapping[str, Any], model: CaiT) -> dict[str, Any]:
    """A timm ``Cait`` ``state_dict`` (the paper's code's layout) -> the variables for
    ``model.apply`` (``model``: a :class:`CaiT` of the paper's architecture,
    :data:`TIMM_ARCHITECTURE` with ``norm_epsilon=1e-6``, of the same sizes; the presets in
    :mod:`cait_flax.presets`).

    The patch position embedding is resampled to ``model``'s patch grid
    (:func:`~vit_layers_flax.resample_position_embedding`, antialiased bicubic, as timm's
    ``resample_abs_pos_embed``; timm's own CaiT loader refuses another size) and the patch
    projection fitted to its ``channels`` (:func:`~vit_layers_flax.adapt_input_channels`, as
    timm's loader does); everything else must match: missing, unexpected and mis-shaped keys
    raise :class:`ConversionError`.
    """
    check_architecture(model, TIMM_ARCHITECTURE, "from_timm", "timm")
    if model.heads * model.dim_head != model.dim:
        raise ConversionError(
            f"from_timm: expected heads * dim_head == dim (timm's heads split dim), received "
            f"heads={model.heads}, dim_head={model.dim_head}, dim={model.dim}"
        )
    sd = StateDict(state_dict)
    p, dim = model.patch_size, model.dim
    weight = sd["patch_embed.proj.weight"]
    if weight.ndim != 4 or weight.shape[0] != dim or weight.shape[2:] != (p, p):
        raise ConversionError(
            f"patch_embed.proj.weight: expected shape ({dim}, channels, {p}, {p}), received shape {weight.shape}"
        )
    weight = adapt_input_channels(weight, model.channels)
    kernel = weight.transpose(2, 3, 1, 0).reshape(p * p * weight.shape[1], dim)  # (p1 p2 c) rows
    grid = (model.image_size // p,) * 2
    pos_embed = sd["pos_embed"]
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] != dim:
        raise ConversionError(
            f"pos_embed: expected shape (1, num_patches, {dim}), received shape {pos_embed.shape}"
        )
    head = {"norm": sd.layer_norm("norm")}
    if (fc := sd.classifier("head", model.num_classes)) is not None:
        head["fc"] = fc
    params = {
        "to_patch_embedding": {"proj": {"kernel": kernel, "bias": sd["patch_embed.proj.bias"]}},
        "embedding": {"pos_embedding": resample_position_embedding(pos_embed[0], grid)},
        "patch_transformer": {
            f"layers_{i}": _timm_block(sd, f"blocks.{i}", model, class_attention=False)
            for i in range(model.depth)
        },
        "cls_token": _weight(sd, "cls_token", (1, 1, dim))[0],
        "cls_transformer": {
            f"layers_{i}": _timm_block(sd, f"blocks_token_only.{i}", model, class_attention=True)
            for i in range(model.cls_depth)
        },
        "mlp_head": head,
    }
    return model_variables(sd, {"params": params}, model)
