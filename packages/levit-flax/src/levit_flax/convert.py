"""Convert vit-pytorch ``levit.LeViT`` weights into :class:`levit_flax.LeViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from levit_flax.attention import attention_bias_indices
from levit_flax.levit import CHANNELS, LeViT
from vit_layers_flax import ConversionError, StateDict, finalize


class _Variables:
    """``params`` and ``batch_stats`` trees filled side by side at the same paths."""

    def __init__(self):
        self.params: dict[str, Any] = {}
        self.batch_stats: dict[str, Any] = {}

    def put(self, path: tuple[str, ...], params: dict, stats: dict | None = None) -> None:
        for tree, value in ((self.params, params), (self.batch_stats, stats)):
            if value is None:
                continue
            for key in path[:-1]:
                tree = tree.setdefault(key, {})
            tree[path[-1]] = value


def _conv_norm(
    sd: StateDict, out: _Variables, path: tuple[str, ...], conv: str, norm: str, bias: bool = False
) -> None:
    """``Sequential(Conv2d 1x1, BatchNorm2d)`` -> :class:`levit_flax.ConvNorm` (``conv``, ``norm``)."""
    norm_params, norm_stats = sd.batch_norm(norm)
    out.put((*path, "conv"), sd.conv2d(conv, bias=bias))
    out.put((*path, "norm"), norm_params, norm_stats)


def _attention(
    sd: StateDict, out: _Variables, path: tuple[str, ...], prefix: str, fmap_size: int, downsample: bool
):
    for name in ("to_q", "to_k", "to_v"):
        _conv_norm(sd, out, (*path, name), f"{prefix}.{name}.0", f"{prefix}.{name}.1")
    # to_out = Sequential(GELU, Conv2d, BatchNorm2d, Dropout)
    _conv_norm(sd, out, (*path, "to_out"), f"{prefix}.to_out.1", f"{prefix}.to_out.2", bias=True)
    out.put((*path, "pos_bias"), {"embedding": sd[f"{prefix}.pos_bias.weight"]})
    # the buffer of bias-table rows is recomputed by the model; only its shape is checked
    indices, expected = sd[f"{prefix}.pos_indices"], attention_bias_indices(fmap_size, downsample)
    if np.shape(indices) != expected.shape:
        raise ConversionError(
            f"{prefix}.pos_indices: expected shape {expected.shape} for a {fmap_size}x{fmap_size} map, "
            f"received {np.shape(indices)}"
        )


def from_vit_pytorch(state_dict: Mapping[str, Any], model: LeViT) -> dict[str, Any]:
    """``torch_levit.state_dict()`` -> the variables dict (``params`` and ``batch_stats``) for
    ``model.apply``.

    ``state_dict`` maps names to torch tensors or numpy arrays (torch is not imported);
    ``model`` is the :class:`LeViT` with the same hyperparameters. BatchNorm running
    statistics become ``batch_stats`` (``num_batches_tracked`` is dropped); the attention
    buffers ``pos_indices`` are not stored (the model recomputes them) but their shapes are
    checked. Raises :class:`vit_layers_flax.ConversionError` (a ``ValueError``) listing
    missing, unexpected and mis-shaped entries. Read a checkpoint file with
    :func:`vit_layers_flax.load_torch_state_dict`.
    """
    sd = StateDict(state_dict)
    out = _Variables()
    for i in range(4):
        out.put((f"conv_embedding_{i}",), sd.conv2d(f"conv_embedding.{i}"))
    for n, stage in enumerate(model.backbone_stages):
        for j in range(stage.depth):
            prefix, path = f"backbone.{n}.layers.{j}", (f"backbone_{n}", f"layers_{j}")
            _attention(sd, out, (*path, "attn"), f"{prefix}.0", stage.fmap_size, stage.downsample)
            out.put((*path, "ff", "fc1"), sd.conv2d(f"{prefix}.1.net.0"))
            out.put((*path, "ff", "fc2"), sd.conv2d(f"{prefix}.1.net.3"))
    out.put(("mlp_head",), sd.linear("mlp_head"))
    if model.num_distill_classes is not None:
        out.put(("distill_head",), sd.linear("distill_head"))
    sample = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, CHANNELS), jnp.float32)
    return finalize(sd, {"params": out.params, "batch_stats": out.batch_stats}, model, sample)
