"""Convert vit-pytorch ``twins_svt.TwinsSVT`` weights into :class:`twins_svt_flax.TwinsSVT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twins_svt_flax.twins_svt import CHANNELS, NUM_STAGES, TwinsSVT
from vit_layers_flax import StateDict, conv_feed_forward_params, model_variables


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
    """``torch_twins_svt.state_dict()`` -> the variables for ``model.apply``.

    Stage ``s`` is the reference's ``layers.{s}`` (``0`` patch embedding, ``1`` first
    transformer, ``2`` PEG, ``3`` transformer); the classifier is its ``layers.6``. A
    ``num_classes=0`` model has no ``to_logits``: it takes a reference built with
    ``num_classes=0`` (whose ``Linear(dim, 0)`` is empty).
    """
    sd = StateDict(state_dict)
    params: dict[str, Any] = {}
    channels = CHANNELS
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
    side = model.input_sizes().smallest
    sample = jax.ShapeDtypeStruct((1, side, side, CHANNELS), jnp.float32)
    return model_variables(sd, {"params": params}, model, sample)
