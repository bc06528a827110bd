"""Convert vit-pytorch ``cait.CaiT`` weights into :class:`cait_flax.CaiT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cait_flax.cait import CaiT
from vit_layers_flax import (
    StateDict,
    classifier_head_params,
    feed_forward_params,
    model_variables,
    patch_embedding_params,
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
