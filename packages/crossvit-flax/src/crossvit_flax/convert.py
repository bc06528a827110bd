"""Convert vit-pytorch ``cross_vit.CrossViT`` and timm ``CrossVit`` weights into
:class:`crossvit_flax.CrossViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from crossvit_flax.cross_vit import CrossViT
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
    timm_block_params,
)

#: the architecture options of vit-pytorch's CrossViT and of timm's, as ``CrossViT`` fields
VIT_PYTORCH_OPTIONS = dict(
    image_scales=(1.0, 1.0),
    patch_norms=True,
    multi_conv=False,
    qkv_bias=False,
    norm_epsilon=1e-5,
    encoder_norms=True,
    cross_attn_layout="vit-pytorch",
    average_heads=False,
)
TIMM_OPTIONS = dict(
    patch_norms=False,
    qkv_bias=True,
    norm_epsilon=1e-6,
    encoder_norms=False,
    cross_attn_layout="timm",
    cross_attn_dim_head=None,
    cross_attn_depth=1,
    average_heads=True,
)


def _self_attention_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``Attention`` (separate ``to_q`` and ``to_kv``) -> the shared
    :class:`vit_layers_flax.Attention` params: the fused ``to_qkv`` kernel is
    ``[to_q | to_kv]`` along the outputs, which is the ``(q, k, v)`` order it splits into."""
    to_q = sd.linear(f"{prefix}.to_q", bias=False)["kernel"]
    to_kv = sd.linear(f"{prefix}.to_kv", bias=False)["kernel"]
    return {
        "norm": sd.layer_norm(f"{prefix}.norm"),
        "to_qkv": {"kernel": np.concatenate([to_q, to_kv], axis=1)},
        "to_out": sd.linear(f"{prefix}.to_out.0"),
    }


def _transformer_params(sd: StateDict, prefix: str, depth: int) -> dict[str, Any]:
    """A branch ``Transformer`` -> :class:`vit_layers_flax.Transformer` params."""
    params: dict[str, Any] = {
        f"layers_{i}": {
            "attn": _self_attention_params(sd, f"{prefix}.layers.{i}.0"),
            "ff": feed_forward_params(sd, f"{prefix}.layers.{i}.1"),
        }
        for i in range(depth)
    }
    params["norm"] = sd.layer_norm(f"{prefix}.norm")
    return params


def _cross_attention_params(sd: StateDict, prefix: str, project: bool) -> dict[str, Any]:
    """``ProjectInOut(Attention)`` -> :class:`crossvit_flax.CrossAttention` params."""
    params = {
        "norm": sd.layer_norm(f"{prefix}.fn.norm"),
        "to_q": sd.linear(f"{prefix}.fn.to_q", bias=False),
        "to_kv": sd.linear(f"{prefix}.fn.to_kv", bias=False),
        "to_out": sd.linear(f"{prefix}.fn.to_out.0"),
    }
    if project:
        params["project_in"] = sd.linear(f"{prefix}.project_in")
        params["project_out"] = sd.linear(f"{prefix}.project_out")
    return params


def _image_embedder_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """``ImageEmbedder``; ``pos_embedding`` ``(1, N + 1, dim)`` and ``cls_token`` ``(1, 1, dim)``
    lose their leading axis."""
    return {
        "to_patch_embedding": patch_embedding_params(sd, f"{prefix}.to_patch_embedding"),
        "embedding": {
            "cls_token": sd[f"{prefix}.cls_token"][0],
            "pos_embedding": sd[f"{prefix}.pos_embedding"][0],
        },
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: CrossViT) -> dict[str, Any]:
    """``torch_cross_vit.state_dict()`` -> the variables dict for ``model.apply``.

    ``multi_scale_encoder.layers.{i}.0`` / ``.1`` / ``.2`` -> ``layers_{i}/sm_enc`` /
    ``layers_{i}/lg_enc`` / ``layers_{i}/cross_attend``; inside a cross transformer
    ``layers.{j}.0`` / ``.1`` -> ``layers_{j}/sm_attend_lg`` / ``layers_{j}/lg_attend_sm``,
    whose ``fn`` (the attention) is flattened beside ``project_in`` / ``project_out``; the
    branch attentions' ``to_q`` and ``to_kv`` are fused into ``to_qkv``. ``model`` must have
    vit-pytorch's architecture (the options' defaults, :data:`VIT_PYTORCH_OPTIONS`).
    """
    check_architecture(model, VIT_PYTORCH_OPTIONS, "from_vit_pytorch", "vit-pytorch")
    sd = StateDict(state_dict)
    project = model.sm_dim != model.lg_dim
    encoder: dict[str, Any] = {}
    for i in range(model.depth):
        prefix = f"multi_scale_encoder.layers.{i}"
        encoder[f"layers_{i}"] = {
            "sm_enc": _transformer_params(sd, f"{prefix}.0", model.sm_enc_depth),
            "lg_enc": _transformer_params(sd, f"{prefix}.1", model.lg_enc_depth),
            "cross_attend": {
                f"layers_{j}": {
                    name: _cross_attention_params(sd, f"{prefix}.2.layers.{j}.{k}", project)
                    for k, name in enumerate(("sm_attend_lg", "lg_attend_sm"))
                }
                for j in range(model.cross_attn_depth)
            },
        }
    params = {
        "sm_image_embedder": _image_embedder_params(sd, "sm_image_embedder"),
        "lg_image_embedder": _image_embedder_params(sd, "lg_image_embedder"),
        "multi_scale_encoder": encoder,
        "sm_mlp_head": classifier_head_params(sd, "sm_mlp_head", num_classes=model.num_classes),
        "lg_mlp_head": classifier_head_params(sd, "lg_mlp_head", num_classes=model.num_classes),
    }
    return model_variables(sd, {"params": params}, model)


def _timm_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The original CrossViT checkpoints' ``pos_embed.{i}`` / ``cls_token.{i}`` keys renamed
    ``pos_embed_{i}`` / ``cls_token_{i}``, as timm's ``pretrained_filter_fn`` does (timm's own
    files already use the latter)."""
    return {
        k.replace(".", "_") if "pos_embed" in k or "cls_token" in k else k: v for k, v in state_dict.items()
    }


def _timm_patch_embedding(
    sd: StateDict, prefix: str, model: CrossViT, dim: int, patch: int
) -> dict[str, Any]:
    """timm's ``PatchEmbed`` at ``prefix``: a convolution of kernel and stride ``patch`` ->
    the Dense of :class:`~vit_layers_flax.PatchEmbedding` (``norms=False``) on ``(p1 p2 c)``
    patches, or (``multi_conv``) its three convolutions ``proj.0``, ``proj.2``, ``proj.4`` ->
    :class:`~crossvit_flax.cross_vit.ConvPatchEmbedding`'s ``conv_0``, ``conv_1``, ``conv_2``.
    The first convolution is fitted to ``model.channels``."""
    if model.multi_conv:
        first = f"{prefix}.proj.0"
        params = {"conv_1": sd.conv2d(f"{prefix}.proj.2"), "conv_2": sd.conv2d(f"{prefix}.proj.4")}
        weight = adapt_input_channels(sd[f"{first}.weight"], model.channels)
        params["conv_0"] = {"kernel": weight.transpose(2, 3, 1, 0), "bias": sd[f"{first}.bias"]}
        return params
    weight = sd[f"{prefix}.proj.weight"]
    if weight.ndim != 4 or weight.shape[0] != dim or weight.shape[2:] != (patch, patch):
        raise ConversionError(
            f"{prefix}.proj.weight: expected shape ({dim}, channels, {patch}, {patch}), "
            f"received shape {weight.shape}"
        )
    weight = adapt_input_channels(weight, model.channels)
    kernel = weight.transpose(2, 3, 1, 0).reshape(-1, dim)  # (p1 p2 c) rows, as patchify's
    return {"proj": {"kernel": kernel, "bias": sd[f"{prefix}.proj.bias"]}}


def _timm_embedder(sd: StateDict, model: CrossViT, branch: int) -> dict[str, Any]:
    """timm's ``patch_embed.{branch}``, ``cls_token_{branch}`` and ``pos_embed_{branch}`` ->
    an :class:`~crossvit_flax.ImageEmbedder`'s params, the position embedding resampled to the
    model's grid."""
    dim = (model.sm_dim, model.lg_dim)[branch]
    patch = (model.sm_patch_size, model.lg_patch_size)[branch]
    side = model.grid_sides[branch]
    pos = sd[f"pos_embed_{branch}"]
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != dim:
        raise ConversionError(
            f"pos_embed_{branch}: expected shape (1, 1 + patches, {dim}), received {pos.shape}"
        )
    return {
        "to_patch_embedding": _timm_patch_embedding(sd, f"patch_embed.{branch}", model, dim, patch),
        "embedding": {
            "cls_token": sd[f"cls_token_{branch}"][0],
            "pos_embedding": resample_position_embedding(pos[0], (side, side), prefix_tokens=1),
        },
    }


def _timm_cross_attention(sd: StateDict, prefix: str, branch: int) -> dict[str, Any]:
    """Branch ``branch``'s fusion in timm's ``MultiScaleBlock`` at ``prefix`` (``projs``,
    ``fusion``, ``revert_projs``; ``Sequential(LayerNorm, GELU, Linear)`` projections) -> a
    ``CrossAttention(layout="timm")``'s params; ``wk`` and ``wv`` are fused into ``to_kv``."""
    attn = f"{prefix}.fusion.{branch}.attn"
    wk, wv = sd.linear(f"{attn}.wk"), sd.linear(f"{attn}.wv")
    return {
        "project_in": {
            "norm": sd.layer_norm(f"{prefix}.projs.{branch}.0"),
            "fc": sd.linear(f"{prefix}.projs.{branch}.2"),
        },
        "norm": sd.layer_norm(f"{prefix}.fusion.{branch}.norm1"),
        "to_q": sd.linear(f"{attn}.wq"),
        "to_kv": {k: np.concatenate([wk[k], wv[k]], axis=-1) for k in ("kernel", "bias")},
        "to_out": sd.linear(f"{attn}.proj"),
        "project_out": {
            "norm": sd.layer_norm(f"{prefix}.revert_projs.{branch}.0"),
            "fc": sd.linear(f"{prefix}.revert_projs.{branch}.2"),
        },
    }


def from_timm(state_dict: Mapping[str, Any], model: CrossViT) -> dict[str, Any]:
    """A timm ``CrossVit`` ``state_dict`` (``crossvit_*``, the "dagger" ones too; the original
    checkpoints' names are read as timm reads them) -> the variables for ``model.apply``
    (``model``: timm's architecture, :data:`TIMM_OPTIONS`, with the same sizes, ``multi_conv``
    and the ``image_scales`` the presets in :mod:`crossvit_flax.presets` give).

    timm's ``blocks.{i}`` is ``multi_scale_encoder/layers_{i}``: its ``blocks.0.{j}`` and
    ``blocks.1.{j}`` (ViT blocks) the ``sm_enc`` and ``lg_enc`` layers, its ``projs.{d}``,
    ``fusion.{d}`` and ``revert_projs.{d}`` ``cross_attend/layers_0/sm_attend_lg`` (``d = 0``)
    and ``lg_attend_sm`` (``d = 1``); ``norm.{d}`` and ``head.{d}`` the heads. The position
    embeddings are resampled to the model's patch grids where they differ
    (:func:`~vit_layers_flax.resample_position_embedding`: timm's ``resample_abs_pos_embed``,
    antialiased bicubic; timm's own CrossViT loader does not resample and refuses another
    image size), the first patch convolutions fitted to ``model.channels`` as timm's loader
    fits its ``first_conv`` (:func:`~vit_layers_flax.adapt_input_channels`). Everything else
    must match: missing, unexpected and mis-shaped keys raise :class:`ConversionError`.
    """
    check_architecture(model, TIMM_OPTIONS, "from_timm", "timm")
    sd = StateDict(_timm_names(state_dict))
    multi_conv = "patch_embed.0.proj.0.weight" in sd
    if multi_conv != model.multi_conv:
        kind = "a multi_conv (dagger) CrossViT" if multi_conv else "a CrossViT without multi_conv"
        raise ConversionError(f"the state_dict is of {kind}, the model has multi_conv={model.multi_conv}")
    params: dict[str, Any] = {
        "sm_image_embedder": _timm_embedder(sd, model, 0),
        "lg_image_embedder": _timm_embedder(sd, model, 1),
    }
    encoder: dict[str, Any] = {}
    for i in range(model.depth):
        prefix = f"blocks.{i}"
        encoder[f"layers_{i}"] = {
            "sm_enc": {
                f"layers_{j}": timm_block_params(sd, f"{prefix}.blocks.0.{j}")
                for j in range(model.sm_enc_depth)
            },
            "lg_enc": {
                f"layers_{j}": timm_block_params(sd, f"{prefix}.blocks.1.{j}")
                for j in range(model.lg_enc_depth)
            },
            "cross_attend": {
                "layers_0": {
                    "sm_attend_lg": _timm_cross_attention(sd, prefix, 0),
                    "lg_attend_sm": _timm_cross_attention(sd, prefix, 1),
                }
            },
        }
    params["multi_scale_encoder"] = encoder
    for d, head in enumerate(("sm_mlp_head", "lg_mlp_head")):
        params[head] = {"norm": sd.layer_norm(f"norm.{d}")}
        if (fc := sd.classifier(f"head.{d}", model.num_classes)) is not None:
            params[head]["fc"] = fc
    return model_variables(sd, {"params": params}, model)
