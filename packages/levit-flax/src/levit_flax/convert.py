"""Convert vit-pytorch ``levit.LeViT`` and timm ``Levit``/``LevitDistilled`` weights into
:class:`levit_flax.LeViT` variables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from levit_flax.attention import attention_bias_indices
from levit_flax.levit import STEM_WIDTHS, LeViT
from vit_layers_flax import (
    ConversionError,
    StateDict,
    adapt_input_channels,
    check_architecture,
    model_variables,
    resample_position_embedding,
)

#: the architecture options of vit-pytorch's LeViT and of timm's (the original LeViT's), as
#: ``LeViT`` fields (timm's also sets ``stem_widths``, ``downsample_heads``,
#: ``downsample_dim_value`` and ``distilled`` from its sizes: see :mod:`levit_flax.presets`)
VIT_PYTORCH_OPTIONS = dict(
    channels=3,
    stem_widths=STEM_WIDTHS,
    stem_norm=False,
    bias_over_scale=True,
    attention_activation="gelu",
    attention_out_bias=True,
    mlp_norm=False,
    downsample_heads=None,
    downsample_dim_value=None,
    head_norm=False,
    distilled=False,
)
TIMM_ARCHITECTURE = dict(
    stem_norm=True,
    bias_over_scale=False,
    attention_activation="hard_swish",
    attention_out_bias=False,
    mlp_norm=True,
    head_norm=True,
    num_distill_classes=None,
)


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
    ``num_classes=0`` (an empty ``mlp_head``) and no distillation head. ``model`` must have
    vit-pytorch's architecture (the options' defaults).
    """
    check_architecture(model, VIT_PYTORCH_OPTIONS, "from_vit_pytorch", "vit-pytorch")
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
    return model_variables(sd, {"params": out.params, "batch_stats": out.batch_stats}, model)


# timm ---------------------------------------------------------------------------------------


def _pointwise(sd: StateDict, key: str) -> np.ndarray:
    """A ``(out, in)`` weight of timm's linear layout (``nn.Linear``) or its ``(out, in, 1, 1)``
    of the conv layout (a 1x1 ``nn.Conv2d``, the ``levit_conv_*`` models) as ``(out, in)``."""
    weight = sd[key]
    if weight.ndim == 4 and weight.shape[2:] == (1, 1):
        return weight[:, :, 0, 0]
    if weight.ndim != 2:
        raise ConversionError(
            f"{key}: expected shape (out, in) (timm's linear layout) or (out, in, 1, 1) (its conv layout), "
            f"received shape {weight.shape}"
        )
    return weight


def _split_heads(key: str, array: np.ndarray, heads: int, widths: tuple[int, ...]) -> list[np.ndarray]:
    """timm's fused per-head rows ``(heads * sum(widths), ...)`` (head ``h``: its q, k, v rows in
    turn) -> one ``(heads * width, ...)`` array per width, heads outermost."""
    if array.shape[0] != heads * sum(widths):
        raise ConversionError(
            f"{key}: expected {heads} heads of {' + '.join(map(str, widths))} = {heads * sum(widths)} rows, "
            f"received shape {array.shape}"
        )
    grouped = array.reshape(heads, sum(widths), *array.shape[1:])
    parts = np.split(grouped, np.cumsum(widths)[:-1], axis=1)
    return [part.reshape(heads * width, *array.shape[1:]) for part, width in zip(parts, widths, strict=True)]


def _linear_norms(
    sd: StateDict, out: _Variables, prefix: str, paths: list[tuple[str, ...]], heads: int = 1, widths=None
) -> None:
    """timm's ``LinearNorm``/``ConvNorm`` (``linear`` without bias, ``bn``) at ``prefix`` ->
    :class:`~levit_flax.ConvNorm` s at ``paths``: one, or the per-head split of a fused
    projection into ``widths`` (:func:`_split_heads`)."""
    weight = _pointwise(sd, f"{prefix}.linear.weight")
    norm, stats = sd.batch_norm(f"{prefix}.bn")
    arrays = [weight, *norm.values(), *stats.values()]
    if widths is not None:
        arrays = [_split_heads(f"{prefix}.linear.weight", a, heads, widths) for a in arrays]
    else:
        arrays = [[a] for a in arrays]
    for i, path in enumerate(paths):
        w, scale, bias, mean, var = (a[i] for a in arrays)
        out.put((*path, "conv"), {"kernel": w.T[None, None]})
        out.put((*path, "norm"), {"scale": scale, "bias": bias}, {"mean": mean, "var": var})


def _attention_biases(sd: StateDict, key: str, fmap_size: int) -> dict[str, np.ndarray]:
    """timm's ``attention_biases`` ``(heads, side * side)`` (one per query-key offset, for a
    ``side x side`` map) -> the ``pos_bias`` table ``(f * f, heads)`` of an ``f x f`` map,
    resampled where ``side != f`` as timm's ``resize_rel_pos_bias_table_levit`` does
    (antialiased bicubic over the offsets; timm's TinyViT loader uses it, its LeViT loader
    refuses another size)."""
    biases = sd[key]
    side = math.isqrt(biases.shape[-1]) if biases.ndim == 2 else 0
    if biases.ndim != 2 or side * side != biases.shape[1]:
        raise ConversionError(f"{key}: expected shape (heads, side * side), received shape {biases.shape}")
    table = resample_position_embedding(biases.T, (fmap_size, fmap_size), old_grid=(side, side))
    return {"embedding": table}


def _timm_block(
    sd: StateDict, out: _Variables, path: tuple[str, ...], prefix: str, model: LeViT, fmap_size: int,
    heads: int, downsample: bool,
) -> None:  # fmt: skip
    """timm's ``LevitBlock`` (``attn``, ``mlp``) or ``LevitDownsample`` (``attn_downsample``,
    ``mlp``) at ``prefix`` -> a :class:`~levit_flax.Block` at ``path``."""
    key = model.dim_key
    attn = (*path, "attn")
    if downsample:
        value = model.dim_value if model.downsample_dim_value is None else model.downsample_dim_value
        a = f"{prefix}.attn_downsample"
        _linear_norms(sd, out, f"{a}.q.ln", [(*attn, "to_q")])
        _linear_norms(sd, out, f"{a}.kv", [(*attn, "to_k"), (*attn, "to_v")], heads, (key, value))
    else:
        a = f"{prefix}.attn"
        paths = [(*attn, "to_q"), (*attn, "to_k"), (*attn, "to_v")]
        _linear_norms(sd, out, f"{a}.qkv", paths, heads, (key, key, model.dim_value))
    _linear_norms(sd, out, f"{a}.proj.ln", [(*attn, "to_out")])
    out.put((*attn, "pos_bias"), _attention_biases(sd, f"{a}.attention_biases", fmap_size))
    _linear_norms(sd, out, f"{prefix}.mlp.ln1", [(*path, "ff", "fc1")])
    _linear_norms(sd, out, f"{prefix}.mlp.ln2", [(*path, "ff", "fc2")])


def from_timm(state_dict: Mapping[str, Any], model: LeViT) -> dict[str, Any]:
    """A timm ``Levit``/``LevitDistilled`` ``state_dict`` (``levit_*`` in the linear layout and
    ``levit_conv_*`` in the conv layout: the same function, 1x1 convolutions for linear
    layers) -> the variables (``params`` and ``batch_stats``) for ``model.apply``.

    ``model`` has timm's architecture (:data:`TIMM_ARCHITECTURE`) with the checkpoint's sizes
    (the presets in :mod:`levit_flax.presets`); ``distilled`` must match the checkpoint's
    ``head_dist``. timm's stage ``i + 1`` opens with the downsampling block that is our
    ``stages_{i}/downsample``; its fused ``qkv`` (``kv``) projections are split per head into
    ``to_q``, ``to_k``, ``to_v``; the ``attention_biases`` tables become ``pos_bias``,
    resampled to ``model``'s maps where its ``image_size`` differs (see
    :func:`_attention_biases`); the first stem convolution is fitted to ``model.channels`` as
    timm's loader does (:func:`~vit_layers_flax.adapt_input_channels`). The buffers
    ``attention_bias_idxs`` of old checkpoints are dropped, as timm's ``checkpoint_filter_fn``
    does. Missing, unexpected and mis-shaped keys raise :class:`ConversionError`.
    """
    check_architecture(model, TIMM_ARCHITECTURE, "from_timm", "timm")
    if "model" in state_dict and not hasattr(state_dict["model"], "shape"):
        state_dict = state_dict["model"]  # the original checkpoints' wrapper, as timm's filter
    state_dict = {k: v for k, v in state_dict.items() if "attention_bias_idxs" not in k}
    heads_in = {name: any(k.startswith(f"{name}.") for k in state_dict) for name in ("head", "head_dist")}
    if model.num_classes and heads_in["head_dist"] != model.distilled:
        received = "a distilled model (head_dist)" if heads_in["head_dist"] else "a model without head_dist"
        raise ConversionError(f"the state_dict is of {received}, the model has distilled={model.distilled}")
    if not model.num_classes and any(heads_in.values()):
        raise ConversionError(
            "the state_dict has heads (head, head_dist), a num_classes=0 model has none: convert into a "
            "model with the state_dict's num_classes, then drop the heads with vit_layers_flax.adapt_variables"
        )
    sd = StateDict(state_dict)
    out = _Variables()
    for i in range(4):
        prefix = f"stem.conv{i + 1}"
        if i == 0:
            weight = sd[f"{prefix}.linear.weight"]
            if weight.ndim != 4:
                raise ConversionError(
                    f"{prefix}.linear.weight: expected shape (out, channels, 3, 3), received {weight.shape}"
                )
            conv = {"kernel": adapt_input_channels(weight, model.channels).transpose(2, 3, 1, 0)}
        else:
            conv = sd.conv2d(f"{prefix}.linear", bias=False)
        out.put((f"conv_embedding_{i}", "conv"), conv)
        out.put((f"conv_embedding_{i}", "norm"), *sd.batch_norm(f"{prefix}.bn"))
    layout = model.stage_layout
    for i, stage in enumerate(layout):
        for j in range(stage.depth):
            path = (f"stages_{i}", f"layers_{j}")
            _timm_block(sd, out, path, f"stages.{i}.blocks.{j}", model, stage.fmap_size, stage.heads, False)
        if stage.dim_out is not None:
            heads = 2 * stage.heads if stage.downsample_heads is None else stage.downsample_heads
            path = (f"stages_{i}", "downsample")
            _timm_block(sd, out, path, f"stages.{i + 1}.downsample", model, stage.fmap_size, heads, True)
    if model.num_classes:
        for ours, theirs in (("mlp_head", "head"), ("distill_head", "head_dist"))[: 1 + model.distilled]:
            out.put((f"{ours}_norm",), *sd.batch_norm(f"{theirs}.bn"))
            out.put((ours,), sd.linear(f"{theirs}.linear"))
    return model_variables(sd, {"params": out.params, "batch_stats": out.batch_stats}, model)
