"""Convert vit-pytorch ``t2t.T2TViT`` weights into :class:`t2t_vit_flax.T2TViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from t2t_vit_flax.t2t_vit import T2TViT
from vit_layers_flax import (
    Attention,
    ConversionError,
    StateDict,
    Transformer,
    TransformerBlock,
    model_variables,
    transformer_params,
)


def _main_transformer(model: T2TViT) -> tuple[int, bool, bool]:
    """``(depth, projects_out, final_norm)`` of the model's main transformer: the default
    one, or a custom :class:`~vit_layers_flax.Transformer` of
    :class:`~vit_layers_flax.TransformerBlock` s with :class:`~vit_layers_flax.Attention`
    (the counterpart of ``vit_pytorch.vit.Transformer``)."""
    if model.transformer is None:
        return model.depth, Attention(model.dim, model.heads, model.dim_head).projects_out, True
    custom = model.transformer
    block = custom.block() if isinstance(custom, Transformer) else None
    attention = None
    if isinstance(block, TransformerBlock):
        attention = block.attention(block.dim, heads=block.heads, dim_head=block.dim_head)
    if not isinstance(attention, Attention):
        raise ConversionError(
            f"T2TViT: cannot convert a custom transformer of type {type(custom).__name__}; only a "
            "vit_layers_flax.Transformer of TransformerBlocks (vit_pytorch.vit.Transformer) is supported"
        )
    return custom.depth, attention.projects_out, custom.final_norm


def from_vit_pytorch(state_dict: Mapping[str, Any], model: T2TViT) -> dict[str, Any]:
    """``torch_t2t_vit.state_dict()`` -> the variables for ``model.apply`` (a :class:`T2TViT` of
    the same hyperparameters). The reference's ``to_patch_embedding`` Sequential holds four
    entries per soft split (its transformer at ``4 * i + 3``) and the final Linear at
    ``4 * len(t2t_layers)``. A ``num_classes=0`` model has no ``mlp_head``: it takes a
    reference built with ``num_classes=0`` (whose ``Linear(dim, 0)`` is empty)."""
    sd = StateDict(state_dict)
    num_splits = len(model.t2t_layers)
    embedding = {
        f"transformers_{i}": transformer_params(sd, f"to_patch_embedding.{4 * i + 3}", 1, to_out=None)
        for i in range(num_splits - 1)
    }
    embedding["proj"] = sd.linear(f"to_patch_embedding.{4 * num_splits}")
    depth, projects_out, final_norm = _main_transformer(model)
    params = {
        "to_patch_embedding": embedding,
        "embedding": {
            "cls_token": sd["cls_token"][0],  # (1, 1, dim) -> (1, dim)
            "pos_embedding": sd["pos_embedding"][0],  # (1, n + 1, dim) -> (n + 1, dim)
        },
        "transformer": transformer_params(
            sd, "transformer", depth, to_out="to_out.0" if projects_out else None, final_norm=final_norm
        ),
        "mlp_head": sd.classifier("mlp_head", model.num_classes),
    }
    if params["mlp_head"] is None:  # num_classes=0: no classifier
        del params["mlp_head"]
    return model_variables(sd, {"params": params}, model)
