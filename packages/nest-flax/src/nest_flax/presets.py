"""The pretrained NesT presets, by timm's names, registered with
:func:`vit_layers_flax.create_model` through the ``vit_layers_flax.presets`` entry point.

Each is the original architecture (Zhang et al., "Nested Hierarchical Transformer", AAAI 2022;
Google's JAX code, timm's ``Nest`` with TF ``'SAME'`` pooling: :data:`~nest_flax.TIMM_ARCHITECTURE`)
at one of the paper's sizes, NesT-T, -S and -B, with Google's ImageNet-1k weights converted
from JAX as timm publishes them on the Hugging Face Hub (``timm/<name>.goog_in1k``,
``model.safetensors``).
"""

from __future__ import annotations

from nest_flax.convert import TIMM_ARCHITECTURE, from_timm
from nest_flax.nest import NesT
from vit_layers_flax import Preset, PretrainedConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (dim, heads, depth of the top level) of each size: 4 px patches, three levels of
#: (2, 2, depth) blocks, widths and heads doubling per level
SIZES = {"tiny": (96, 3, 8), "small": (96, 3, 20), "base": (128, 4, 20)}


def _preset(size: str, tags: tuple[str, ...]) -> Preset:
    """The preset of ``size`` and its weight tags, the default first."""
    dim, heads, depth = SIZES[size]
    config = dict(image_size=224, patch_size=4, num_classes=1000, dim=dim, heads=heads, num_hierarchies=3,
                  block_repeats=(2, 2, depth), **TIMM_ARCHITECTURE)  # fmt: skip
    mean, std = IMAGENET
    return Preset(
        NesT,
        config,
        from_timm,
        classifier=("head",),
        weights={
            tag: PretrainedConfig(
                hub_id=f"timm/nest_{size}_jx.{tag}",
                num_classes=1000,
                input_size=(224, 224),
                mean=mean,
                std=std,
                crop_pct=0.875,
                interpolation="bicubic",
                license="apache-2.0",
            )
            for tag in tags
        },
    )


#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {f"nest_{size}_jx": _preset(size, ("goog_in1k",)) for size in SIZES}
