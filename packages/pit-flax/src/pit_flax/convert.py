"""Convert vit-pytorch ``pit.PiT`` and timm ``PoolingVisionTransformer`` weights into
:class:`pit_flax.PiT` variables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pit_flax.pit import PiT
from vit_layers_flax import (
    Attention,
    ConversionError,
    StateDict,
    adapt_input_channels,
    check_architecture,
    classifier_head_params,
    model_variables,
    resample_position_embedding,
    timm_block_params,
    transformer_params,
)

#: the architecture options of vit-pytorch's PiT and of timm's, as ``PiT`` fields
VIT_PYTORCH_OPTIONS = dict(
    qkv_bias=False, norm_epsilon=1e-5, pool_pointwise=True, class_token_position=True, distilled=False
)
TIMM_OPTIONS = dict(qkv_bias=True, norm_epsilon=1e-6, pool_pointwise=False, class_token_position=False)


def pool_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``Pool`` -> :class:`~pit_flax.Pool` params."""
    return {
        "cls_ff": sd.linear(f"{prefix}.cls_ff"),
        "depthwise": sd.conv2d(f"{prefix}.downsample.net.0"),
        "pointwise": sd.conv2d(f"{prefix}.downsample.net.1"),
    }


def from_vit_pytorch(state_dict: Mapping[str, Any], model: PiT) -> dict[str, Any]:
    """``torch_pit.state_dict()`` -> the variables for ``model.apply`` (a :class:`PiT` of the
    same hyperparameters). The reference's ``layers`` Sequential alternates stage
    transformers (``layers.{2i}`` -> ``stages_{i}``) and pools (``layers.{2i+1}`` ->
    ``pools_{i}``). With ``num_classes=0`` the head's LayerNorm is kept and its (empty)
    ``Linear(dim, 0)`` skipped."""
    check_architecture(model, VIT_PYTORCH_OPTIONS, "from_vit_pytorch", "vit-pytorch")
    sd = StateDict(state_dict)
    params: dict[str, Any] = {
        "to_patch_embedding": sd.linear("to_patch_embedding.2"),  # after Unfold and Rearrange
        "embedding": {
            "cls_token": sd["cls_token"][0],  # (1, 1, dim) -> (1, dim)
            "pos_embedding": sd["pos_embedding"][0],  # (1, n + 1, dim) -> (n + 1, dim)
        },
    }
    stages = model.stages
    for i, stage in enumerate(stages):
        projects_out = Attention(stage.dim, stage.heads, model.dim_head).projects_out
        params[f"stages_{i}"] = transformer_params(
            sd,
            f"layers.{2 * i}",
            stage.depth,
            to_out="to_out.0" if projects_out else None,
            final_norm=False,
        )
        if i < len(stages) - 1:
            params[f"pools_{i}"] = pool_params(sd, f"layers.{2 * i + 1}")
    params["mlp_head"] = classifier_head_params(sd, "mlp_head", num_classes=model.num_classes)
    return model_variables(sd, {"params": params}, model)


def _timm_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The original PiT checkpoints' ``pools.{i}.`` keys renamed ``transformers.{i+1}.pool.``,
    as timm's ``checkpoint_filter_fn`` does (timm's own files already use the latter)."""
    pools = re.compile(r"pools\.(\d)\.")
    return {
        pools.sub(lambda m: f"transformers.{int(m.group(1)) + 1}.pool.", k): v for k, v in state_dict.items()
    }


def from_timm(state_dict: Mapping[str, Any], model: PiT) -> dict[str, Any]:
    """A timm ``PoolingVisionTransformer`` ``state_dict`` (``pit_*``, distilled or not; the
    original PiT checkpoints' names too) -> the variables for ``model.apply`` (``model``:
    timm's architecture, ``qkv_bias=True, norm_epsilon=1e-6, pool_pointwise=False,
    class_token_position=False``, with the same sizes and ``distilled``; the presets in
    :mod:`pit_flax.presets`).

    The patch convolution (kernel ``patch_size``, stride ``patch_size // 2``) becomes the
    Dense on unfolded ``(c kh kw)`` patches, fitted to ``model.channels`` as timm's loader
    fits its first convolution (:func:`~vit_layers_flax.adapt_input_channels`). The position
    embedding, timm's ``(1, dim, h, w)`` grid, is resampled to ``model``'s patch grid where it
    differs (:func:`~vit_layers_flax.resample_position_embedding`: timm's
    ``resample_abs_pos_embed``, antialiased bicubic; timm's own PiT loader does not resample
    and refuses another image size). Everything else must match: missing, unexpected and
    mis-shaped keys raise :class:`ConversionError`.
    """
    check_architecture(model, TIMM_OPTIONS, "from_timm", "timm")
    sd = StateDict(_timm_names(state_dict))
    cls_token = sd["cls_token"]
    tokens = cls_token.shape[1] if cls_token.ndim == 3 and cls_token.shape[0] == 1 else None
    if tokens != model.class_tokens:
        kind = {1: "a model without distillation token", 2: "a distilled model (2 class tokens)"}
        received = kind.get(tokens, f"a cls_token of shape {cls_token.shape}")
        raise ConversionError(f"the state_dict is of {received}, the model has distilled={model.distilled}")
    p, dim = model.patch_size, model.dim
    weight = sd["patch_embed.conv.weight"]
    if weight.ndim != 4 or weight.shape[0] != dim or weight.shape[2:] != (p, p):
        raise ConversionError(
            f"patch_embed.conv.weight: expected shape ({dim}, channels, {p}, {p}), received shape {weight.shape}"
        )
    weight = adapt_input_channels(weight, model.channels)
    pos_embed = sd["pos_embed"]
    if pos_embed.ndim != 4 or pos_embed.shape[:2] != (1, dim):
        raise ConversionError(
            f"pos_embed: expected shape (1, {dim}, height, width), received shape {pos_embed.shape}"
        )
    side = model.grid_sides[0]
    rows = pos_embed[0].transpose(1, 2, 0).reshape(-1, dim)  # (h w) row-major, as the patch tokens
    params: dict[str, Any] = {
        "to_patch_embedding": {"kernel": weight.reshape(dim, -1).T, "bias": sd["patch_embed.conv.bias"]},
        "embedding": {
            "cls_token": cls_token[0],
            "pos_embedding": resample_position_embedding(rows, (side, side), old_grid=pos_embed.shape[2:]),
        },
    }

    for i, stage in enumerate(model.stages):
        params[f"stages_{i}"] = {
            f"layers_{j}": timm_block_params(sd, f"transformers.{i}.blocks.{j}") for j in range(stage.depth)
        }
        if i:  # timm's stage i starts with the pool that follows our stage i - 1
            params[f"pools_{i - 1}"] = {
                "cls_ff": sd.linear(f"transformers.{i}.pool.fc"),
                "depthwise": sd.conv2d(f"transformers.{i}.pool.conv"),
            }
    head = {"norm": sd.layer_norm("norm")}
    for name, key in (("fc", "head"), ("fc_dist", "head_dist"))[: model.class_tokens]:
        if (linear := sd.classifier(key, model.num_classes)) is not None:
            head[name] = linear
    params["mlp_head"] = head
    return model_variables(sd, {"params": params}, model)
