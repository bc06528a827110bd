"""Convert vit-pytorch ``nest.NesT`` and timm ``Nest`` weights into :class:`nest_flax.NesT` variables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nest_flax.nest import NesT
from vit_layers_flax import (
    ConversionError,
    StateDict,
    adapt_input_channels,
    cast_tuple,
    check_architecture,
    conv_feed_forward_params,
    model_variables,
    torch_bicubic_matrix,
)

#: the options of :class:`NesT` that make the original (Google's JAX, timm's) architecture, and
#: their values; ``pool_padding="same"`` is timm's ``nest_*_jx`` (the converted weights), its
#: ``nest_*`` use ``"symmetric"``
TIMM_ARCHITECTURE = dict(
    patch_norms=False, qkv_bias=True, norm_epsilon=1e-6, pos_emb_per_block=True, pool_padding="same"
)
#: vit-pytorch's values of those options (the defaults)
VIT_PYTORCH_ARCHITECTURE = dict(
    patch_norms=True, qkv_bias=False, norm_epsilon=1e-5, pos_emb_per_block=False, pool_padding="symmetric"
)


def _hierarchy(sd: StateDict, prefix: str, depth: int, aggregate: bool) -> dict[str, Any]:
    """The reference's ``layers.{i}``: ``0`` a ``nest.Transformer`` (``pos_emb``; ``layers.{j}.0``
    attention and ``layers.{j}.1`` feed-forward, on 1x1 convolutions), ``1`` the aggregation."""
    transformer = f"{prefix}.0"
    params: dict[str, Any] = {"pos_emb": sd[f"{transformer}.pos_emb"], "transformer": {}}
    for j in range(depth):
        attn, ff = f"{transformer}.layers.{j}.0", f"{transformer}.layers.{j}.1"
        params["transformer"][f"layers_{j}"] = {
            "attn": {
                "norm": sd.chan_layer_norm(f"{attn}.norm"),
                "to_qkv": sd.pointwise(f"{attn}.to_qkv", bias=False),
                "to_out": sd.pointwise(f"{attn}.to_out.0"),
            },
            "ff": conv_feed_forward_params(sd, f"{ff}.net"),
        }
    if aggregate:
        params["aggregate"] = {
            "conv": sd.conv2d(f"{prefix}.1.0"),
            "norm": sd.chan_layer_norm(f"{prefix}.1.1"),
        }
    return params


def from_vit_pytorch(state_dict: Mapping[str, Any], model: NesT) -> dict[str, Any]:
    """``torch_nest.state_dict()`` -> the variables for ``model.apply``: level ``i`` (the
    reference's ``layers.{i}``) is ``stages_{i}``, the head's ``mlp_head.0`` / ``mlp_head.2`` are
    ``norm`` / ``head``; 1x1 convolutions become Dense kernels. A ``num_classes=0`` model has
    no ``head``: it takes a reference built with ``num_classes=0`` (an empty ``Linear``)."""
    check_architecture(model, VIT_PYTORCH_ARCHITECTURE, "from_vit_pytorch", "vit-pytorch")
    sd = StateDict(state_dict)
    params: dict[str, Any] = {
        "to_patch_embedding": {
            "patch_norm": sd.chan_layer_norm("to_patch_embedding.1"),
            "proj": sd.pointwise("to_patch_embedding.2"),
            "norm": sd.chan_layer_norm("to_patch_embedding.3"),
        },
        "norm": sd.chan_layer_norm("mlp_head.0"),
    }
    if (head := sd.classifier("mlp_head.2", model.num_classes)) is not None:
        params["head"] = head
    repeats = cast_tuple(model.block_repeats, model.num_hierarchies)
    for i, depth in enumerate(repeats):
        params[f"stages_{i}"] = _hierarchy(sd, f"layers.{i}", depth, aggregate=i < model.num_hierarchies - 1)
    side = model.input_sizes().smallest
    sample = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    return model_variables(sd, {"params": params}, model, sample)


def resample_block_position_embedding(pos_embed: Any, block_side: int) -> np.ndarray:
    """A level's position embedding ``(blocks, n, dim)`` (a square grid of square blocks of ``n``
    positions, in timm's ``blockify`` order) resampled to blocks of ``block_side ** 2``
    positions, as timm's ``nest.resize_pos_embed``: the blocks put back together into one
    map, resized with torch's bicubic interpolation (not antialiased) and cut again.
    Returned unchanged where the blocks already have that size."""
    pos = np.asarray(pos_embed)
    blocks, n, dim = pos.shape
    grid, side = math.isqrt(blocks), math.isqrt(n)
    if grid * grid != blocks or side * side != n:
        raise ConversionError(
            f"block position embedding: expected a square grid of square blocks, received shape {pos.shape}"
        )
    if side == block_side:
        return pos
    # (x y) blocks of (w1 w2) positions -> the (x w1) (y w2) map
    full = pos.reshape(grid, grid, side, side, dim).transpose(0, 2, 1, 3, 4).reshape(grid * side, -1, dim)
    matrix = torch_bicubic_matrix(grid * side, grid * block_side)
    resized = np.tensordot(matrix, full.astype(np.float64), axes=(1, 0))  # rows, then columns
    resized = np.tensordot(matrix, resized, axes=(1, 1))  # (j, i, d)
    resized = resized.transpose(1, 0, 2)
    resized = resized.reshape(grid, block_side, grid, block_side, dim).transpose(0, 2, 1, 3, 4)
    return resized.reshape(blocks, block_side * block_side, dim).astype(pos.dtype)


def from_timm(state_dict: Mapping[str, Any], model: NesT) -> dict[str, Any]:
    """A timm ``Nest`` ``state_dict`` (``nest_*_jx``: Google's JAX NesT converted; ``nest_*``)
    -> the variables for ``model.apply`` (``model``: the original architecture,
    :data:`TIMM_ARCHITECTURE`, with the same sizes; ``pool_padding`` as the checkpoint's
    model: ``"same"`` for ``nest_*_jx``; the presets in :mod:`nest_flax.presets`).

    timm's level ``i`` starts with the aggregation (``levels.{i}.pool``) that ends our level
    ``i - 1``. The patch convolution becomes the Dense on ``(p1 p2 c)`` patches, fitted to
    ``model.channels`` as timm's loader fits its first convolution
    (:func:`~vit_layers_flax.adapt_input_channels`); each level's position embedding is
    resampled to ``model``'s blocks where they differ (:func:`resample_block_position_embedding`,
    timm's ``nest.resize_pos_embed``). timm's attention orders its output channels per head
    dimension, then head: the output projection's rows are reordered. Everything else must
    match: missing, unexpected and mis-shaped keys raise :class:`ConversionError`.
    """
    check_architecture(
        model, {k: v for k, v in TIMM_ARCHITECTURE.items() if k != "pool_padding"}, "from_timm", "timm"
    )
    sd = StateDict(state_dict)
    p, dim = model.patch_size, model.dim
    weight = sd["patch_embed.proj.weight"]
    if weight.ndim != 4 or weight.shape[0] != dim or weight.shape[2:] != (p, p):
        raise ConversionError(
            f"patch_embed.proj.weight: expected shape ({dim}, channels, {p}, {p}), received shape {weight.shape}"
        )
    weight = adapt_input_channels(weight, model.channels)
    params: dict[str, Any] = {
        "to_patch_embedding": {
            "proj": {
                "kernel": weight.transpose(2, 3, 1, 0).reshape(-1, dim),
                "bias": sd["patch_embed.proj.bias"],
            }
        },
        "norm": sd.layer_norm("norm"),
    }
    if (head := sd.classifier("head", model.num_classes)) is not None:
        params["head"] = head
    block_side = math.isqrt(model.seq_len)
    for i, depth in enumerate(cast_tuple(model.block_repeats, model.num_hierarchies)):
        width, heads, level = dim * 2**i, model.heads * 2**i, f"levels.{i}"
        blocks = 4 ** (model.num_hierarchies - 1 - i)
        pos = sd[f"{level}.pos_embed"]
        if pos.ndim != 4 or pos.shape[:2] != (1, blocks) or pos.shape[3] != width:
            raise ConversionError(
                f"{level}.pos_embed: expected shape (1, {blocks}, positions, {width}), received shape {pos.shape}"
            )
        stage: dict[str, Any] = {
            "pos_emb": resample_block_position_embedding(pos[0], block_side),
            "transformer": {},
        }
        for j in range(depth):
            prefix = f"{level}.transformer_encoder.{j}"
            proj = sd.linear(f"{prefix}.attn.proj")
            kernel = proj["kernel"]
            if kernel.shape[0] % heads == 0:  # (d h) rows -> (h d); a wrong shape is reported later
                kernel = kernel.reshape(-1, heads, kernel.shape[1]).transpose(1, 0, 2).reshape(kernel.shape)
            stage["transformer"][f"layers_{j}"] = {
                "attn": {
                    "norm": sd.layer_norm(f"{prefix}.norm1"),
                    "to_qkv": sd.linear(f"{prefix}.attn.qkv"),
                    "to_out": {"kernel": kernel, "bias": proj["bias"]},
                },
                "ff": {
                    "norm": sd.layer_norm(f"{prefix}.norm2"),
                    "fc1": sd.linear(f"{prefix}.mlp.fc1"),
                    "fc2": sd.linear(f"{prefix}.mlp.fc2"),
                },
            }
        params[f"stages_{i}"] = stage
        if i:
            params[f"stages_{i - 1}"]["aggregate"] = {
                "conv": sd.conv2d(f"{level}.pool.conv"),
                "norm": sd.layer_norm(f"{level}.pool.norm"),
            }
    return model_variables(sd, {"params": params}, model)
