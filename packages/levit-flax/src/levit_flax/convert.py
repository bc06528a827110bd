"""Convert vit-pytorch ``levit.LeViT`` weights into :class:`levit_flax.LeViT` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from levit_flax.attention import attention_bias_indices
from levit_flax.levit import CHANNELS, LeViT
from vit_layers_flax import ConversionError, StateDict, model_variables


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
    """``Sequential(Conv2d 1x1, BatchNorm2d)`` -> a :class:`~levit_flax.ConvNorm` (``conv``, ``norm``)."""
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


def _block(
    sd: StateDict, out: _Variables, path: tuple[str, ...], prefix: str, fmap_size: int, downsample: bool
):
    """The reference's ``layers.{j}`` (``0`` attention, ``1`` feed-forward) -> a :class:`~levit_flax.Block`."""
    _attention(sd, out, (*path, "attn"), f"{prefix}.0", fmap_size, downsample)
    out.put((*path, "ff", "fc1"), sd.conv2d(f"{prefix}.1.net.0"))
    out.put((*path, "ff", "fc2"), sd.conv2d(f"{prefix}.1.net.3"))


def _no_heads(sd: StateDict) -> None:
    """A ``num_classes=0`` model has no heads: read the reference's empty ``Linear(dim, 0)``
    ``mlp_head``; a head with classes (a distillation head included) raises."""
    for key in ("mlp_head.weight", "mlp_head.bias", "distill_head.weight", "distill_head.bias"):
        if key in sd and sd[key].shape[0]:
            raise ConversionError(
                f"{key}: a num_classes=0 model has no heads, the state_dict's has {sd[key].shape[0]} "
                "classes: convert into a model with the state_dict's num_classes and num_distill_classes, "
                "then drop the heads with vit_layers_flax.adapt_variables"
            )


def from_vit_pytorch(state_dict: Mapping[str, Any], model: LeViT) -> dict[str, Any]:
    """``torch_levit.state_dict()`` -> the variables (``params`` and ``batch_stats``) for ``model.apply``.

    Stage ``i`` is the reference's ``backbone.{2i}``, its downsampling block
    ``backbone.{2i+1}.layers.0``. BatchNorm running statistics become ``batch_stats``; the
    attention buffers ``pos_indices`` are recomputed by the model, so only their shapes are
    checked. A ``num_classes=0`` model has no heads: it takes a reference built with
    ``num_classes=0`` (an empty ``mlp_head``) and no distillation head.
    """
    sd = StateDict(state_dict)
    out = _Variables()
    for i in range(4):
        out.put((f"conv_embedding_{i}",), sd.conv2d(f"conv_embedding.{i}"))
    for i, stage in enumerate(model.stage_layout):
        for j in range(stage.depth):
            prefix = f"backbone.{2 * i}.layers.{j}"
            _block(sd, out, (f"stages_{i}", f"layers_{j}"), prefix, stage.fmap_size, downsample=False)
        if stage.dim_out is not None:
            prefix = f"backbone.{2 * i + 1}.layers.0"
            _block(sd, out, (f"stages_{i}", "downsample"), prefix, stage.fmap_size, downsample=True)
    if model.num_classes > 0:
        out.put(("mlp_head",), sd.linear("mlp_head"))
        if model.num_distill_classes is not None:
            out.put(("distill_head",), sd.linear("distill_head"))
    else:
        _no_heads(sd)
    side = model.input_sizes().smallest
    sample = jax.ShapeDtypeStruct((1, side, side, CHANNELS), jnp.float32)
    return model_variables(sd, {"params": out.params, "batch_stats": out.batch_stats}, model, sample)
