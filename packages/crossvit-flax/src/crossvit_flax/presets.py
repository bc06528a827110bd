"""The pretrained CrossViT presets, by timm's names, registered with
:func:`vit_layers_flax.create_model` through the ``vit_layers_flax.presets`` entry point.

Each is the original CrossViT architecture (Chen, Fan and Panda, "CrossViT: Cross-Attention
Multi-Scale Vision Transformer for Image Classification", ICCV 2021; timm's ``CrossVit``:
``patch_norms=False, qkv_bias=True, norm_epsilon=1e-6, encoder_norms=False,
cross_attn_layout="timm", cross_attn_dim_head=None, average_heads=True``) at one of the
paper's sizes, CrossViT-Ti, -S, -B, -9, -15 and -18, the last three also with the
3-convolution patch embedding (``multi_conv=True``, the "dagger" models, ``crossvit_*_dagger_*``),
with the ImageNet-1k weights timm publishes for it on the Hugging Face Hub
(``timm/<name>.<tag>``, ``model.safetensors``). The large-patch branch sees the image resized
to ``224 / 240`` of its side (``384 / 408`` for the 408-pixel models): timm's ``img_scale``.
"""

from __future__ import annotations

import re

from crossvit_flax.convert import TIMM_OPTIONS, from_timm
from crossvit_flax.cross_vit import CrossViT
from vit_layers_flax import Preset, PretrainedConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (small-branch width, heads, large-branch blocks per multi-scale block, MLP ratio) of each
#: size; the large branch is twice as wide, three multi-scale blocks of one small-branch block
SIZES = {
    "tiny": (96, 3, 4, 4),
    "small": (192, 6, 4, 4),
    "base": (384, 12, 4, 4),
    "9": (128, 4, 3, 3),
    "15": (192, 6, 5, 3),
    "18": (224, 7, 6, 3),
}

#: the large branch's image side over the input's, by input size (timm's ``img_scale[1]``)
LARGE_SCALE = {240: 224 / 240, 408: 384 / 408}


def _preset(name: str, weights: dict[str, tuple]) -> Preset:
    """The preset ``name`` (its size, patch embedding and image size are in the name);
    ``weights``: ``tag: (num_classes, (mean, std))``, the default tag first."""
    size, dagger, image = re.fullmatch(r"crossvit_(\w+?)_(dagger_)?(\d+)", name).groups()
    dim, heads, lg_depth, mlp_ratio = SIZES[size]
    image = int(image)
    config = dict(
        image_size=image, num_classes=1000, depth=3, sm_dim=dim, sm_patch_size=12, sm_enc_depth=1,
        sm_enc_heads=heads, sm_enc_dim_head=dim // heads, sm_enc_mlp_dim=mlp_ratio * dim, lg_dim=2 * dim,
        lg_patch_size=16, lg_enc_depth=lg_depth, lg_enc_heads=heads, lg_enc_dim_head=2 * dim // heads,
        lg_enc_mlp_dim=mlp_ratio * 2 * dim, cross_attn_heads=heads, dropout=0.0, emb_dropout=0.0,
        image_scales=(1.0, LARGE_SCALE[image]), multi_conv=bool(dagger), **TIMM_OPTIONS,
    )  # fmt: skip
    return Preset(
        CrossViT,
        config,
        from_timm,
        classifier=("head.0", "head.1"),
        weights={
            tag: PretrainedConfig(
                hub_id=f"timm/{name}.{tag}",
                num_classes=num_classes,
                input_size=(image, image),
                mean=mean,
                std=std,
                crop_pct=0.875 if image == 240 else 1.0,
                interpolation="bicubic",
                license="apache-2.0",
            )
            for tag, (num_classes, (mean, std)) in weights.items()
        },
    )


WEIGHTS: dict[str, dict[str, tuple]] = {
    **{f"crossvit_{size}_240": dict(in1k=(1000, IMAGENET)) for size in SIZES},
    **{f"crossvit_{size}_dagger_240": dict(in1k=(1000, IMAGENET)) for size in ("9", "15", "18")},
    **{f"crossvit_{size}_dagger_408": dict(in1k=(1000, IMAGENET)) for size in ("15", "18")},
}

#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {name: _preset(name, weights) for name, weights in WEIGHTS.items()}
