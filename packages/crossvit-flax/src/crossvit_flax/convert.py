"""Convert vit-pytorch ``cross_vit.CrossViT`` weights into :class:`crossvit_flax.CrossViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossvit_flax.cross_vit import CrossViT
from vit_layers_flax import (
    StateDict,
    classifier_head_params,
    feed_forward_params,
    model_variables,
    patch_embedding_params,
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
    branch attentions' ``to_q`` and ``to_kv`` are fused into ``to_qkv``.
    """
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
    side = model.input_sizes().smallest
    sample = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    return model_variables(sd, {"params": params}, model, sample)
