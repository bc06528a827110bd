"""Convert vit-pytorch ``vit.ViT`` and timm ``VisionTransformer`` weights into
:class:`vision_transformer_flax.ViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vision_transformer_flax.vit import ViT
from vit_layers_flax import (
    Attention,
    ConversionError,
    StateDict,
    adapt_input_channels,
    model_variables,
    pair,
    patch_embedding_params,
    resample_position_embedding,
    timm_block_params,
    transformer_params,
)


def from_vit_pytorch(state_dict: Mapping[str, Any], model: ViT) -> dict[str, Any]:
    """``torch_vit.state_dict()`` -> the variables for ``model.apply`` (``model``: the
    :class:`ViT` with the same hyperparameters)."""
    sd = StateDict(state_dict)
    embedding = {"pos_embedding": sd["pos_embedding"]}
    cls_token = sd["cls_token"]  # (0, dim) with pool='mean': the reference keeps an empty one
    if model.pool == "cls":
        embedding["cls_token"] = cls_token
    elif cls_token.shape != (0, model.dim):
        raise ConversionError(f"cls_token: expected shape (0, {model.dim}), received shape {cls_token.shape}")
    attention = Attention(model.dim, heads=model.heads, dim_head=model.dim_head)
    params = {
        "to_patch_embedding": patch_embedding_params(sd, "to_patch_embedding"),
        "embedding": embedding,
        "transformer": transformer_params(
            sd, "transformer", model.depth, to_out="to_out.0" if attention.projects_out else None
        ),
    }
    if model.num_classes > 0:
        params["mlp_head"] = sd.linear("mlp_head")
    return model_variables(sd, {"params": params}, model)


def from_timm(state_dict: Mapping[str, Any], model: ViT) -> dict[str, Any]:
    """A timm ``VisionTransformer`` (or DeiT's ``VisionTransformerDistilled``) ``state_dict``
    -> the variables for ``model.apply`` (``model``: the original architecture,
    ``patch_norms=False, qkv_bias=True, norm_epsilon=1e-6``, with the same sizes; the
    presets in :mod:`vision_transformer_flax.presets`).

    As timm's own loader does, the position embedding is resampled to ``model``'s patch grid
    (:func:`~vit_layers_flax.resample_position_embedding`) and the patch projection fitted to
    its ``channels`` (:func:`~vit_layers_flax.adapt_input_channels`); everything else must
    match: missing, unexpected and mis-shaped keys raise :class:`ConversionError`.
    """
    if model.patch_norms or not model.qkv_bias or model.pool != "cls":
        raise ConversionError(
            "from_timm: expected a ViT with patch_norms=False, qkv_bias=True and pool='cls' (timm's "
            f"architecture), received patch_norms={model.patch_norms}, qkv_bias={model.qkv_bias}, "
            f"pool={model.pool!r}"
        )
    sd = StateDict(state_dict)
    if ("dist_token" in sd) != model.distilled:
        kind = (
            "a distilled model (dist_token)" if "dist_token" in sd else "a model without distillation token"
        )
        raise ConversionError(f"the state_dict is of {kind}, the model has distilled={model.distilled}")
    (p1, p2), dim = pair(model.patch_size), model.dim
    weight = sd["patch_embed.proj.weight"]
    if weight.ndim != 4 or weight.shape[0] != dim or weight.shape[2:] != (p1, p2):
        raise ConversionError(
            f"patch_embed.proj.weight: expected shape ({dim}, channels, {p1}, {p2}), received shape {weight.shape}"
        )
    weight = adapt_input_channels(weight, model.channels)
    kernel = weight.transpose(2, 3, 1, 0).reshape(p1 * p2 * weight.shape[1], dim)  # (p1 p2 c) rows
    tokens = ["cls_token", "dist_token"] if model.distilled else ["cls_token"]
    grid = tuple(i // p for i, p in zip(pair(model.image_size), (p1, p2), strict=True))
    pos_embedding = resample_position_embedding(sd["pos_embed"][0], grid, prefix_tokens=len(tokens))

    params = {
        "to_patch_embedding": {"proj": {"kernel": kernel, "bias": sd["patch_embed.proj.bias"]}},
        "embedding": {
            "cls_token": np.concatenate([sd[t].reshape(-1, dim) for t in tokens]),
            "pos_embedding": pos_embedding,
        },
        "transformer": {
            **{f"layers_{i}": timm_block_params(sd, f"blocks.{i}") for i in range(model.depth)},
            "norm": sd.layer_norm("norm"),
        },
    }
    for head, name in (("head", "mlp_head"), ("head_dist", "head_dist"))[: 1 + model.distilled]:
        if (linear := sd.classifier(head, model.num_classes)) is not None:
            params[name] = linear
    return model_variables(sd, {"params": params}, model)
