"""Presets by name across the installed model packages, and pretrained weights for them.

A model package registers a mapping ``name -> Preset`` under the entry-point group
``vit_layers_flax.presets``; installing the package adds its names to :func:`list_models`
and :func:`create_model`, with nothing else to import.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

import jax
import jax.numpy as jnp

from vit_layers_flax.checkpoint import load_torch_state_dict
from vit_layers_flax.conversion import ConversionError
from vit_layers_flax.interface import ImageClassifier, adapt_variables

#: the entry-point group model packages register their presets under
ENTRY_POINT_GROUP = "vit_layers_flax.presets"


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    """One published set of weights: where it is and how it was trained.

    ``hub_id`` is the Hugging Face Hub repository holding ``filename``; ``num_classes`` the
    classes of its head (0: none); ``input_size`` the ``(height, width)`` it was trained at;
    ``mean``/``std`` the input normalisation (of images in [0, 1]); ``crop_pct`` and
    ``interpolation`` its evaluation resize; ``license`` the publisher's licence of the weights.
    """

    hub_id: str
    num_classes: int
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    license: str | None = None
    filename: str = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named configuration of a model class and the weights published for it.

    ``config`` holds the constructor keywords; ``convert(state_dict, model) -> variables``
    reads the published checkpoints' format (it fits them to ``model``'s ``image_size`` and
    ``channels``, as the publisher's own loader does); ``classifier`` names the checkpoint's
    classifier layers (their ``.weight`` rows are its classes); ``weights`` maps each tag to
    its :class:`PretrainedConfig`, the default first.
    """

    model_cls: Callable[..., ImageClassifier]
    config: Mapping[str, Any]
    convert: Callable[[Mapping[str, Any], ImageClassifier], dict[str, Any]]
    classifier: tuple[str, ...] = ("head",)
    weights: Mapping[str, PretrainedConfig] = dataclasses.field(default_factory=dict)

    def build(self, **overrides: Any) -> ImageClassifier:
        """The model, ``overrides`` replacing configuration keywords."""
        return self.model_cls(**{**self.config, **overrides})

    def checkpoint_classes(self, state_dict: Mapping[str, Any]) -> int:
        """The number of classes of a checkpoint's classifier (0 where it has none)."""
        key = f"{self.classifier[0]}.weight"
        return int(state_dict[key].shape[0]) if key in state_dict else 0


def _presets() -> dict[str, Preset]:
    found: dict[str, Preset] = {}
    owner: dict[str, str] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        for name, preset in point.load().items():
            if name in found:
                raise RuntimeError(f"preset {name!r} is registered by both {owner[name]} and {point.value}")
            found[name], owner[name] = preset, point.value
    return found


def list_models(filter: str = "*", *, pretrained: bool = False) -> list[str]:
    """The sorted preset names of every installed model package that match ``filter`` (a
    shell-style pattern such as ``'deit_*'``); with ``pretrained=True`` the ``name.tag`` of
    every published set of weights instead."""
    names = []
    for name, preset in _presets().items():
        names += [f"{name}.{tag}" for tag in preset.weights] if pretrained else [name]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, filter))


def get_preset(name: str) -> tuple[Preset, str | None]:
    """The :class:`Preset` of ``name`` (``'arch'`` or ``'arch.tag'``) and its weight tag (the
    default tag where ``name`` has none and weights exist; else ``None``)."""
    arch, _, tag = name.partition(".")
    presets = _presets()
    if arch not in presets:
        near = difflib.get_close_matches(arch, list(presets), n=3)
        hint = f"; did you mean {near}?" if near else ""
        raise ValueError(
            f"unknown model {arch!r}: expected one of the {len(presets)} names list_models() gives "
            f"(installed model packages register them){hint}"
        )
    preset = presets[arch]
    if tag and tag not in preset.weights:
        raise ValueError(f"{arch} has no weights tagged {tag!r}: expected one of {list(preset.weights)}")
    return preset, tag or next(iter(preset.weights), None)


def pretrained_config(name: str) -> PretrainedConfig:
    """The :class:`PretrainedConfig` of ``name`` (``'arch.tag'``; ``'arch'``: its default weights)."""
    preset, tag = get_preset(name)
    if tag is None:
        raise ValueError(f"{name} has no published weights")
    return preset.weights[tag]


def download_weights(weights: PretrainedConfig) -> str:
    """The local path of ``weights``' file, downloaded once into the Hugging Face cache
    (``huggingface_hub``; ``HF_HUB_OFFLINE=1`` reads the cache only)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise ImportError(
            "pretrained=True downloads weights with huggingface_hub, which is not installed: "
            "pip install 'vit-layers-flax[hub]' (every model package has the same 'hub' extra), "
            "or pass the path of a downloaded file as pretrained="
        ) from err
    return hf_hub_download(weights.hub_id, weights.filename)


def create_model(
    name: str,
    *,
    pretrained: bool | str | os.PathLike = False,
    num_classes: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    rng: jax.Array | None = None,
    **kwargs: Any,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """``(model, variables)`` of the preset ``name`` (``'arch'`` or ``'arch.tag'``).

    ``pretrained``: ``False`` initialises from ``rng``; ``True`` loads the tag's published
    weights (downloaded with the ``hub`` extra, then cached); a path loads that
    ``.safetensors`` file, or a torch checkpoint with ``torch.load(weights_only=True)``.
    ``num_classes`` (default: the weights'), ``image_size`` and ``channels`` adapt the
    weights as fine-tuning needs: a new classifier initialised from ``rng``, the position
    embedding resampled, the input projection fitted to the channels, each as the
    publisher's loader does it. ``kwargs`` set other model fields (``dtype``, ``scan``,
    ``dropout`` ...).
    """
    preset, tag = get_preset(name)
    weights = preset.weights[tag] if tag is not None else None
    overrides = dict(num_classes=num_classes, image_size=image_size, channels=channels)
    overrides = {k: v for k, v in overrides.items() if v is not None} | kwargs
    if weights is not None:
        overrides.setdefault("num_classes", weights.num_classes)
    model = preset.build(**overrides)
    rng = jax.random.key(0) if rng is None else rng
    if pretrained is False or pretrained is None:
        sample = model.sample_input()
        return model, jax.jit(model.init)(rng, jnp.zeros(sample.shape, sample.dtype))
    if pretrained is True:
        if weights is None:
            raise ValueError(f"{name} has no published weights: pass the path of a checkpoint as pretrained=")
        path = download_weights(weights)
    else:
        path = os.fspath(pretrained)
    try:
        state_dict = load_torch_state_dict(path)
    except (FileNotFoundError, ImportError):
        raise
    except Exception as err:  # safetensors' and torch's own errors for a file they cannot read
        raise ValueError(
            f"{path}: expected a .safetensors file or a torch state_dict (.bin, .pth), could not read it: {err}"
        ) from err
    source = model.clone(num_classes=preset.checkpoint_classes(state_dict))
    try:
        variables = preset.convert(state_dict, source)
    except ConversionError as err:
        raise ConversionError(f"{path} is not a checkpoint of {name.partition('.')[0]}: {err}") from err
    if source.num_classes != model.num_classes:
        variables = adapt_variables(variables, model, rng=rng)
    return model, variables
