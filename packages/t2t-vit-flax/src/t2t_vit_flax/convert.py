"""Convert vit-pytorch ``t2t.T2TViT`` weights into :class:`t2t_vit_flax.T2TViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from t2t_vit_flax.t2t_vit import T2TViT
from vit_layers_flax import ConversionError, StateDict, Transformer, finalize, transformer_params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: T2TViT) -> dict[str, Any]:
    """``torch_t2t_vit.state_dict()`` -> the variables dict for ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`T2TViT` with the same hyperparameters. The reference's
    ``to_patch_embedding`` Sequential holds four entries per soft split (its transformer at
    index ``4 * i + 3``) and the final Linear at ``4 * len(t2t_layers)``. A custom
    ``transformer`` converts when it is a :class:`vit_layers_flax.Transformer` (the
    counterpart of ``vit_pytorch.vit.Transformer``). Raises
    :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing missing, unexpected
    and mis-shaped entries.
    """
    sd = StateDict(state_dict)
    num_splits = len(model.t2t_layers)
    embedding = {
        f"transformers_{i}": transformer_params(sd, f"to_patch_embedding.{4 * i + 3}", 1, to_out=None)
        for i in range(num_splits - 1)
    }
    embedding["proj"] = sd.linear(f"to_patch_embedding.{4 * num_splits}")

    if model.transformer is None:
        t = Transformer(model.dim, model.depth, model.heads, model.dim_head, model.mlp_dim)
    elif isinstance(model.transformer, Transformer):
        t = model.transformer
    else:
        raise ConversionError(
            f"T2TViT: cannot convert a custom transformer of type {type(model.transformer).__name__}; "
            "only vit_layers_flax.Transformer (vit_pytorch.vit.Transformer) is supported"
        )
    projects_out = not (t.heads == 1 and t.dim_head == t.dim)
    params = {
        "to_patch_embedding": embedding,
        "cls_token": sd["cls_token"][0],  # (1, 1, dim) -> (1, dim)
        "pos_embedding": sd["pos_embedding"][0],  # (1, n + 1, dim) -> (n + 1, dim)
        "transformer": transformer_params(
            sd, "transformer", t.depth, to_out="to_out.0" if projects_out else None, final_norm=t.final_norm
        ),
        "mlp_head": sd.linear("mlp_head"),
    }
    sample = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.channels), jnp.float32)
    return finalize(sd, {"params": params}, model, sample)
