"""Helpers for converting a vit-pytorch ``state_dict`` into Flax variables.

A package's ``from_vit_pytorch`` reads the reference's keys through a
:class:`StateDict`, builds the nested variables dict with the small per-layer helpers
below, and hands it to :func:`model_variables`, which checks it against the module's own
variable shapes and reports every missing, unexpected or mis-shaped entry at once.
Torch is never imported: tensors are turned into numpy through their own methods.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

#: Buffers torch keeps that carry no information for inference.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor, numpy array or array-like as a numpy array (float32 for bf16/fp16)."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _join(prefix: str, name: str) -> str:
    """``'a.b' + 'weight' -> 'a.b.weight'``; an empty prefix means the module is the root."""
    return f"{prefix}.{name}" if prefix else name


class ConversionError(ValueError):
    """The state_dict does not fit the Flax module."""


class StateDict:
    """A read-tracking view of a torch ``state_dict`` as numpy arrays.

    Indexing a key marks it used; :meth:`unused` lists what no converter read, so a
    converter that forgets a weight fails loudly instead of leaving an initial value.
    """

    def __init__(self, state_dict: Mapping[str, Any]):
        self._arrays = {k: to_numpy(v) for k, v in state_dict.items()}
        self._used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            near = sorted(k for k in self._arrays if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0])
            hint = f"; keys with that prefix: {near}" if near else ""
            raise ConversionError(f"the state_dict has no key {key!r}{hint}")
        self._used.add(key)
        return self._arrays[key]

    def unused(self) -> list[str]:
        return sorted(k for k in self._arrays if k not in self._used and not k.endswith(IGNORED_SUFFIXES))

    # per-layer helpers -------------------------------------------------------------

    def linear(self, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
        """``nn.Linear`` ``(out, in)`` weight -> ``nn.Dense`` ``(in, out)`` kernel."""
        out = {"kernel": self[_join(prefix, "weight")].T}
        if bias:
            out["bias"] = self[_join(prefix, "bias")]
        return out

    def classifier(self, prefix: str, num_classes: int) -> dict[str, np.ndarray] | None:
        """The classifier ``nn.Linear`` at ``prefix`` as :meth:`linear`, or, for a
        ``num_classes=0`` model (no classifier), ``None`` after checking that the reference's
        ``Linear(dim, 0)`` there is empty (or absent); a classifier with classes raises,
        naming the fix (convert with its ``num_classes``, then ``adapt_variables``)."""
        if num_classes:
            return self.linear(prefix)
        for key in (_join(prefix, "weight"), _join(prefix, "bias")):
            if key in self and self[key].shape[0]:
                raise ConversionError(
                    f"{key}: expected no classifier (num_classes=0), received {self[key].shape[0]} "
                    f"classes: convert into a model with num_classes={self[key].shape[0]}, then "
                    "vit_layers_flax.adapt_variables"
                )
        return None

    def layer_norm(self, prefix: str) -> dict[str, np.ndarray]:
        """``nn.LayerNorm`` weight/bias -> ``scale``/``bias``."""
        return {"scale": self[_join(prefix, "weight")], "bias": self[_join(prefix, "bias")]}

    def chan_layer_norm(self, prefix: str) -> dict[str, np.ndarray]:
        """The reference's channel LayerNorm ``g``/``b`` ``(1, C, 1, 1)`` -> a
        :class:`~vit_layers_flax.LayerNorm`'s ``scale``/``bias`` (the same normalisation, on
        the last axis of NHWC)."""
        return {"scale": self[_join(prefix, "g")].reshape(-1), "bias": self[_join(prefix, "b")].reshape(-1)}

    def _conv_weight(self, prefix: str, pointwise: bool = False) -> np.ndarray:
        key = _join(prefix, "weight")
        weight = self[key]
        if weight.ndim != 4 or (pointwise and weight.shape[2:] != (1, 1)):
            expected = "(out, in, 1, 1)" if pointwise else "(out, in / groups, kh, kw)"
            raise ConversionError(f"{key}: expected shape {expected}, received shape {weight.shape}")
        return weight

    def conv2d(self, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
        """``nn.Conv2d`` ``(O, I/groups, kh, kw)`` weight -> ``nn.Conv`` ``(kh, kw, I/groups, O)``."""
        out = {"kernel": self._conv_weight(prefix).transpose(2, 3, 1, 0)}
        if bias:
            out["bias"] = self[_join(prefix, "bias")]
        return out

    def pointwise(self, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
        """A 1x1 ``nn.Conv2d`` ``(O, I, 1, 1)`` -> an ``nn.Dense`` ``(I, O)`` on the channel axis of NHWC."""
        out = {"kernel": self._conv_weight(prefix, pointwise=True)[:, :, 0, 0].T}
        if bias:
            out["bias"] = self[_join(prefix, "bias")]
        return out

    def batch_norm(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``nn.BatchNorm*`` -> (``params`` {scale, bias}, ``batch_stats`` {mean, var})."""
        params = {"scale": self[_join(prefix, "weight")], "bias": self[_join(prefix, "bias")]}
        stats = {"mean": self[_join(prefix, "running_mean")], "var": self[_join(prefix, "running_var")]}
        return params, stats


def patch_embedding_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """The reference's ``to_patch_embedding`` Sequential (Rearrange, LayerNorm, Linear,
    LayerNorm) -> :class:`~vit_layers_flax.PatchEmbedding` params."""
    return {
        "patch_norm": sd.layer_norm(_join(prefix, "1")),
        "proj": sd.linear(_join(prefix, "2")),
        "norm": sd.layer_norm(_join(prefix, "3")),
    }


def attention_params(
    sd: StateDict, prefix: str, *, to_out: str | None = "to_out.0", out_bias: bool = True
) -> dict[str, Any]:
    """vit-pytorch ``Attention`` -> :class:`~vit_layers_flax.Attention` params.

    ``to_out`` is the name of the output Linear inside ``prefix`` (``'to_out.0'`` when it
    is wrapped in a Sequential with dropout, ``'to_out'`` when bare), or ``None`` when the
    reference has no output projection.
    """
    params = {
        "norm": sd.layer_norm(_join(prefix, "norm")),
        "to_qkv": sd.linear(_join(prefix, "to_qkv"), bias=False),
    }
    if to_out is not None:
        params["to_out"] = sd.linear(_join(prefix, f"{to_out}"), bias=out_bias)
    return params


def feed_forward_params(sd: StateDict, prefix: str, *, fc2_index: int = 4) -> dict[str, Any]:
    """vit-pytorch ``FeedForward`` (``net`` = LayerNorm, Linear, GELU, [Dropout,] Linear, ...)
    -> :class:`~vit_layers_flax.FeedForward` params. ``fc2_index`` is the second Linear's
    index in ``net`` (4 with dropout layers, 3 without)."""
    return {
        "norm": sd.layer_norm(_join(prefix, "net.0")),
        "fc1": sd.linear(_join(prefix, "net.1")),
        "fc2": sd.linear(_join(prefix, f"net.{fc2_index}")),
    }


def conv_feed_forward_params(sd: StateDict, prefix: str, *, fc2_index: int = 4) -> dict[str, Any]:
    """The reference's convolutional ``FeedForward`` (``Sequential`` of channel LayerNorm, 1x1
    conv, GELU, [Dropout,] 1x1 conv) -> :class:`~vit_layers_flax.FeedForward` params (its
    ``Dense`` layers on the channel axis are those 1x1 convolutions)."""
    return {
        "norm": sd.chan_layer_norm(_join(prefix, "0")),
        "fc1": sd.pointwise(_join(prefix, "1")),
        "fc2": sd.pointwise(_join(prefix, str(fc2_index))),
    }


def transformer_params(
    sd: StateDict,
    prefix: str,
    depth: int,
    *,
    to_out: str | None = "to_out.0",
    out_bias: bool = True,
    fc2_index: int = 4,
    final_norm: bool = True,
) -> dict[str, Any]:
    """vit-pytorch ``Transformer`` (``layers.{i}.0`` attention, ``layers.{i}.1`` feed-forward,
    then ``norm``) -> :class:`~vit_layers_flax.Transformer` params."""
    params: dict[str, Any] = {
        f"layers_{i}": {
            "attn": attention_params(sd, _join(prefix, f"layers.{i}.0"), to_out=to_out, out_bias=out_bias),
            "ff": feed_forward_params(sd, _join(prefix, f"layers.{i}.1"), fc2_index=fc2_index),
        }
        for i in range(depth)
    }
    if final_norm:
        params["norm"] = sd.layer_norm(_join(prefix, "norm"))
    return params


def classifier_head_params(
    sd: StateDict, prefix: str = "mlp_head", num_classes: int | None = None
) -> dict[str, Any]:
    """The reference's ``Sequential(LayerNorm, Linear)`` head -> :class:`~vit_layers_flax.ClassifierHead`
    params; with ``num_classes=0`` the norm alone (see :meth:`StateDict.classifier`)."""
    head = {"norm": sd.layer_norm(_join(prefix, "0"))}
    if (fc := sd.classifier(_join(prefix, "1"), 1 if num_classes is None else num_classes)) is not None:
        head["fc"] = fc
    return head


def _flat(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def stack_layers(variables: Mapping[str, Any], like: Mapping[str, Any]) -> dict[str, Any]:
    """Per-block subtrees ``<name>_i ... <name>_j`` -> one ``<name>`` subtree whose arrays
    carry a leading axis of ``j - i + 1``, wherever ``like`` (the target module's variables
    or their shapes, e.g. from ``jax.eval_shape(model.init, ...)``) has ``<name>``: the
    layout of a block stack built with ``scan=True``. The blocks stacked are those ``like``
    does not have itself, so a stack whose first block differs (ScalableViT's, with its
    PEG) keeps ``<name>_0`` and stacks ``<name>_1 ...``; they must be numbered without gaps.

    Everything else is kept as it is, so variables already in ``like``'s layout pass
    through unchanged. Stacks nest (a scanned block that itself scans its layers): the
    outer stack's axis comes first. The converters call this through :func:`model_variables`; call it
    yourself to move variables of a model without ``scan`` into one with it.
    """
    if not isinstance(variables, Mapping) or not isinstance(like, Mapping):
        return variables
    out: dict[str, Any] = {}
    stacks: dict[str, dict[int, Any]] = {}
    for key, value in variables.items():
        base, _, index = key.rpartition("_")
        if key not in like and index.isdigit() and base in like:
            stacks.setdefault(base, {})[int(index)] = value
        else:
            out[key] = stack_layers(value, like[key]) if key in like else value
    for base, blocks in stacks.items():
        first = min(blocks)
        if sorted(blocks) != list(range(first, first + len(blocks))):
            raise ConversionError(
                f"{base}: blocks {sorted(blocks)} are not numbered {first} to {first + len(blocks) - 1}"
            )
        # each block's own stacks first, so that nested scans keep the outer axis first
        layouts = [stack_layers(blocks[i], like[base]) for i in sorted(blocks)]
        try:
            out[base] = jax.tree.map(lambda *xs: np.stack(xs), *layouts)
        except ValueError as error:
            raise ConversionError(
                f"{base}: the blocks' variables differ, so they cannot be stacked: {error}"
            ) from error
    return out


def model_variables(
    sd: StateDict,
    variables: Mapping[str, Any],
    model: nn.Module,
    sample_input: jax.ShapeDtypeStruct | Iterable[jax.ShapeDtypeStruct] | None = None,
) -> dict[str, Any]:
    """Check converted ``variables`` against ``model``'s own and return them as jax arrays.

    Per-block variables (``layers_0`` ...) are stacked where the module scans its blocks
    (:func:`stack_layers`), so every converter also serves ``scan=True``. Raises
    :class:`ConversionError` listing unread state_dict keys, variables the module expects
    but the conversion did not produce, extra ones, and shape mismatches. Arrays are cast
    to the dtype the module initialises them with (its ``param_dtype``). ``sample_input``
    defaults to ``model.sample_input()`` (or, for a layer, one image of its smallest input size).
    """
    if sample_input is None and hasattr(model, "sample_input"):
        sample_input = model.sample_input()
    elif sample_input is None:  # a layer with input sizes of its own
        shape = (1, *model.input_sizes().smallest_shape, getattr(model, "channels", 3))
        sample_input = jax.ShapeDtypeStruct(shape, jnp.float32)
    inputs = (sample_input,) if isinstance(sample_input, jax.ShapeDtypeStruct) else tuple(sample_input)
    expected = jax.eval_shape(lambda *xs: model.init(jax.random.key(0), *xs), *inputs)
    got, want = _flat(stack_layers(variables, expected)), _flat(expected)
    problems = []
    if unused := sd.unused():
        problems.append(f"unexpected state_dict keys (not read by the converter): {unused}")
    if missing := sorted(set(want) - set(got)):
        problems.append(f"variables missing from the conversion: {missing}")
    if extra := sorted(set(got) - set(want)):
        problems.append(f"converted variables the module does not have: {extra}")
    for name in sorted(set(got) & set(want)):
        if tuple(np.shape(got[name])) != tuple(want[name].shape):
            problems.append(
                f"{name}: expected shape {tuple(want[name].shape)}, converted {tuple(np.shape(got[name]))}"
            )
    if problems:
        raise ConversionError(f"state_dict does not match {type(model).__name__}: " + "; ".join(problems))
    arrays = {k: jnp.asarray(v, dtype=want[k].dtype) for k, v in got.items()}
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in arrays.items()})


def resample_position_embedding(
    pos_embedding: Any,
    grid: tuple[int, int],
    *,
    prefix_tokens: int = 0,
    old_grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """A learned position embedding ``(prefix_tokens + h * w, dim)`` resampled to ``grid``:
    the prefix (class, distillation) rows kept, the grid rows resized with antialiased
    bicubic interpolation, exactly as timm's ``resample_abs_pos_embed`` (``jax.image.resize``'s
    antialiased cubic is torch's). ``old_grid`` defaults to the square the rows make."""
    pos = np.asarray(pos_embedding)
    prefix, rows = pos[:prefix_tokens], pos[prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(len(rows))
        if side * side != len(rows):
            raise ConversionError(
                f"position embedding: {len(rows)} grid rows after {prefix_tokens} prefix tokens are "
                "not a square grid; expected old_grid=(height, width)"
            )
        old_grid = (side, side)
    if tuple(old_grid) == tuple(grid):
        return pos
    if len(rows) != old_grid[0] * old_grid[1]:
        raise ConversionError(
            f"position embedding: expected {old_grid[0]} * {old_grid[1]} grid rows, received {len(rows)}"
        )
    dim = pos.shape[-1]
    resized = jax.image.resize(
        jnp.asarray(rows.reshape(*old_grid, dim), jnp.float32), (*grid, dim), method="cubic", antialias=True
    )
    resized = np.asarray(jax.device_get(resized)).reshape(-1, dim).astype(pos.dtype)
    return np.concatenate([prefix, resized])


def adapt_input_channels(weight: Any, channels: int) -> np.ndarray:
    """A first convolution's torch weight ``(out, 3, kh, kw)`` fitted to ``channels`` inputs,
    as timm's ``adapt_input_conv``: one channel gets the sum over the three, more get them
    repeated in order and scaled by ``3 / channels``."""
    weight = np.asarray(weight)
    out, inputs, kh, kw = weight.shape
    if channels in (inputs, 3):
        return weight
    if channels == 1 and inputs <= 3:
        return weight.sum(axis=1, keepdims=True)
    if channels == 1 and inputs % 3 == 0:
        return weight.reshape(out, inputs // 3, 3, kh, kw).sum(axis=2)
    if inputs != 3:
        raise ConversionError(
            f"input convolution: expected 3 input channels to adapt to {channels}, received {inputs}"
        )
    repeat = math.ceil(channels / 3)
    return (np.tile(weight, (1, repeat, 1, 1))[:, :channels] * (3 / channels)).astype(weight.dtype)


def check_architecture(model: nn.Module, options: Mapping[str, Any], converter: str, source: str) -> None:
    """Raise :class:`ConversionError` unless ``model``'s fields have the values ``options``
    gives (the architecture a converter reads, e.g. timm's), naming each that differs."""
    wrong = {k: getattr(model, k) for k, v in options.items() if getattr(model, k) != v}
    if wrong:
        expected = ", ".join(f"{k}={v!r}" for k, v in options.items())
        received = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise ConversionError(
            f"{converter}: expected a {type(model).__name__} with {expected} ({source}'s architecture), "
            f"received {received}"
        )


def timm_block_params(sd: StateDict, prefix: str) -> dict[str, Any]:
    """timm's pre-norm ViT ``Block`` (``norm1``, ``attn.qkv`` with bias, ``attn.proj``,
    ``norm2``, ``mlp.fc1``, ``mlp.fc2``) -> a :class:`~vit_layers_flax.TransformerBlock`'s
    params (``Attention(qkv_bias=True)``)."""
    return {
        "attn": {
            "norm": sd.layer_norm(_join(prefix, "norm1")),
            "to_qkv": sd.linear(_join(prefix, "attn.qkv")),
            "to_out": sd.linear(_join(prefix, "attn.proj")),
        },
        "ff": {
            "norm": sd.layer_norm(_join(prefix, "norm2")),
            "fc1": sd.linear(_join(prefix, "mlp.fc1")),
            "fc2": sd.linear(_join(prefix, "mlp.fc2")),
        },
    }
