"""The pretrained PiT presets, by timm's names, registered with
:func:`vit_layers_flax.create_model` through the ``vit_layers_flax.presets`` entry point.

Each is the original PiT architecture (Heo et al., "Rethinking Spatial Dimensions of Vision
Transformers", ICCV 2021; timm's ``PoolingVisionTransformer``: ``qkv_bias=True,
norm_epsilon=1e-6, pool_pointwise=False, class_token_position=False``, MLPs 4 times each
stage's width) at one of the paper's sizes, PiT-Ti, -XS, -S and -B, without or with DeiT's
distillation token (``pit_*_distilled_224``), with the ImageNet-1k weights timm publishes
for it on the Hugging Face Hub (``timm/<name>.<tag>``, ``model.safetensors``).
"""

from __future__ import annotations

import re

from pit_flax.convert import from_timm
from pit_flax.pit import PiT
from vit_layers_flax import Preset, PretrainedConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (patch_size, dim_head, depth, heads) of each size; stage ``i`` is ``heads[i] * dim_head``
#: wide (doubling), its MLP 4 times that
SIZES = {
    "ti": (16, 32, (2, 6, 4), (2, 4, 8)),
    "xs": (16, 48, (2, 6, 4), (2, 4, 8)),
    "s": (16, 48, (2, 6, 4), (3, 6, 12)),
    "b": (14, 64, (3, 6, 4), (4, 8, 16)),
}


def _preset(name: str, weights: dict[str, tuple]) -> Preset:
    """The preset ``name`` (its size, distillation and image size are in the name);
    ``weights``: ``tag: (num_classes, (mean, std))``, the default tag first."""
    size, distilled, image = re.fullmatch(r"pit_(\w+?)_(distilled_)?(\d+)", name).groups()
    patch, dim_head, depth, heads = SIZES[size]
    image = int(image)
    dim = heads[0] * dim_head
    config = dict(image_size=image, patch_size=patch, num_classes=1000, dim=dim, depth=depth, heads=heads,
                  dim_head=dim_head, mlp_dim=tuple(4 * h * dim_head for h in heads), qkv_bias=True,
                  norm_epsilon=1e-6, pool_pointwise=False, class_token_position=False,
                  distilled=bool(distilled))  # fmt: skip
    return Preset(
        PiT,
        config,
        from_timm,
        classifier=("head", "head_dist") if distilled else ("head",),
        weights={
            tag: PretrainedConfig(
                hub_id=f"timm/{name}.{tag}",
                num_classes=num_classes,
                input_size=(image, image),
                mean=mean,
                std=std,
                crop_pct=0.9,
                interpolation="bicubic",
                license="apache-2.0",
            )
            for tag, (num_classes, (mean, std)) in weights.items()
        },
    )


WEIGHTS: dict[str, dict[str, tuple]] = {
    f"pit_{size}_{distilled}224": dict(in1k=(1000, IMAGENET))
    for distilled in ("", "distilled_")
    for size in SIZES
}

#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {name: _preset(name, weights) for name, weights in WEIGHTS.items()}
