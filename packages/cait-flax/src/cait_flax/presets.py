"""The pretrained CaiT presets, by timm's names, registered with
:func:`vit_layers_flax.create_model` through the ``vit_layers_flax.presets`` entry point.

Each is the paper's architecture (Touvron et al., "Going deeper with Image Transformers",
ICCV 2021: ``patch_norms=False, qkv_bias=True, norm_epsilon=1e-6, talking_heads_bias=True,
cls_talking_heads=False, cls_norm_context=True``) at one of its sizes, with the weights
Facebook published (trained with distillation from a RegNet teacher, hence ``fb_dist_in1k``;
the model keeps one class token and one head), as timm publishes them on the Hugging Face
Hub (``timm/<name>.<tag>``, ``model.safetensors``).
"""

from __future__ import annotations

import re

from cait_flax.cait import CaiT
from cait_flax.convert import TIMM_ARCHITECTURE, from_timm
from vit_layers_flax import Preset, PretrainedConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (dim, heads) of each size: heads 48 wide, the MLP 4 * dim
SIZES = {"xxs": (192, 4), "xs": (288, 6), "s": (384, 8), "m": (768, 16)}


def _preset(name: str, layer_scale_init: float, tags: tuple[str, ...]) -> Preset:
    """The preset ``name`` (its size, depth and image size are in the name), its LayerScale
    initial value and its weight tags, the default first."""
    size, depth, image = re.fullmatch(r"cait_([a-z]+)(\d+)_(\d+)", name).groups()
    (dim, heads), depth, image = SIZES[size], int(depth), int(image)
    config = dict(image_size=image, patch_size=16, num_classes=1000, dim=dim, depth=depth, cls_depth=2,
                  heads=heads, dim_head=dim // heads, mlp_dim=4 * dim, norm_epsilon=1e-6,
                  layer_scale_init=layer_scale_init, **TIMM_ARCHITECTURE)  # fmt: skip
    mean, std = IMAGENET
    return Preset(
        CaiT,
        config,
        from_timm,
        classifier=("head",),
        weights={
            tag: PretrainedConfig(
                hub_id=f"timm/{name}.{tag}",
                num_classes=1000,
                input_size=(image, image),
                mean=mean,
                std=std,
                crop_pct=1.0,
                interpolation="bicubic",
                license="apache-2.0",
            )
            for tag in tags
        },
    )


#: each name's LayerScale initial value (timm's and the paper's code's ``init_values``)
# fmt: off
LAYER_SCALE_INIT = {"cait_xxs24_224": 1e-5, "cait_xxs24_384": 1e-5, "cait_xxs36_224": 1e-5, "cait_xxs36_384": 1e-5,
                    "cait_xs24_384": 1e-5, "cait_s24_224": 1e-5, "cait_s24_384": 1e-5, "cait_s36_384": 1e-6,
                    "cait_m36_384": 1e-6, "cait_m48_448": 1e-6}
# fmt: on

#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {
    name: _preset(name, init, ("fb_dist_in1k",)) for name, init in LAYER_SCALE_INIT.items()
}
