"""The pretrained ViT and DeiT presets, by timm's names, registered with
:func:`vit_layers_flax.create_model` through the ``vit_layers_flax.presets`` entry point.

Each is the original ViT architecture (``patch_norms=False, qkv_bias=True,
norm_epsilon=1e-6``) at one of Dosovitskiy et al.'s sizes (tiny and small: Steiner et al.,
"How to train your ViT?", 2021), or DeiT's (Touvron et al., "Training data-efficient image
transformers & distillation through attention", ICML 2021), with every set of weights timm
publishes for it on the Hugging Face Hub (``timm/<name>.<tag>``, ``model.safetensors``).
"""

from __future__ import annotations

import re

from vision_transformer_flax.convert import from_timm
from vision_transformer_flax.vit import ViT
from vit_layers_flax import Preset, PretrainedConfig

#: input normalisation of the Google (AugReg, original, SAM) checkpoints, and of the others
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (dim, depth, heads) of each size; the MLP is 4 * dim wide, each head 64 wide (huge: 80)
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
         "huge": (1280, 32, 16)}  # fmt: skip


def _preset(name: str, weights: dict[str, tuple]) -> Preset:
    """The preset ``name`` (its size, patch size, image size and distillation are in the name);
    ``weights``: ``tag: (num_classes, (mean, std)[, license])``, the default tag first."""
    size, distilled, patch, image = re.fullmatch(
        r"(?:vit|deit)_(\w+?)_(distilled_)?patch(\d+)_(\d+)", name
    ).groups()
    dim, depth, heads = SIZES[size]
    patch, image = int(patch), int(image)
    config = dict(image_size=image, patch_size=patch, num_classes=1000, dim=dim, depth=depth, heads=heads,
                  dim_head=dim // heads, mlp_dim=4 * dim, patch_norms=False, qkv_bias=True, norm_epsilon=1e-6,
                  distilled=bool(distilled))  # fmt: skip
    return Preset(
        ViT,
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
                crop_pct=0.9 if image == 224 else 1.0,
                interpolation="bicubic",
                license=license[0] if license else "apache-2.0",
            )
            for tag, (num_classes, (mean, std), *license) in weights.items()
        },
    )


# fmt: off
WEIGHTS: dict[str, dict[str, tuple]] = {
    "vit_tiny_patch16_224": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in21k=(21843, INCEPTION)),
    "vit_tiny_patch16_384": dict(augreg_in21k_ft_in1k=(1000, INCEPTION)),
    "vit_small_patch8_224": dict(dino=(0, IMAGENET)),
    "vit_small_patch16_224": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in1k=(1000, INCEPTION),
                                  augreg_in21k=(21843, INCEPTION), dino=(0, IMAGENET)),
    "vit_small_patch16_384": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in1k=(1000, INCEPTION)),
    "vit_small_patch32_224": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in21k=(21843, INCEPTION)),
    "vit_small_patch32_384": dict(augreg_in21k_ft_in1k=(1000, INCEPTION)),
    "vit_base_patch8_224": dict(augreg2_in21k_ft_in1k=(1000, INCEPTION), augreg_in21k=(21843, INCEPTION),
                                augreg_in21k_ft_in1k=(1000, INCEPTION), dino=(0, IMAGENET)),
    "vit_base_patch16_224": dict(augreg2_in21k_ft_in1k=(1000, INCEPTION), augreg_in1k=(1000, INCEPTION),
                                 augreg_in21k=(21843, INCEPTION), augreg_in21k_ft_in1k=(1000, INCEPTION),
                                 dino=(0, IMAGENET), mae=(0, IMAGENET, "cc-by-nc-4.0"), orig_in21k=(0, INCEPTION),
                                 orig_in21k_ft_in1k=(1000, INCEPTION), sam_in1k=(1000, INCEPTION)),
    "vit_base_patch16_384": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in1k=(1000, INCEPTION),
                                 orig_in21k_ft_in1k=(1000, INCEPTION)),
    "vit_base_patch32_224": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in1k=(1000, INCEPTION),
                                 augreg_in21k=(21843, INCEPTION), orig_in21k=(0, INCEPTION),
                                 sam_in1k=(1000, INCEPTION)),
    "vit_base_patch32_384": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in1k=(1000, INCEPTION)),
    "vit_large_patch16_224": dict(augreg_in21k_ft_in1k=(1000, INCEPTION), augreg_in21k=(21843, INCEPTION),
                                  mae=(0, IMAGENET, "cc-by-nc-4.0"), orig_in21k=(0, INCEPTION)),
    "vit_large_patch16_384": dict(augreg_in21k_ft_in1k=(1000, INCEPTION)),
    "vit_large_patch32_224": dict(orig_in21k=(0, INCEPTION)),
    "vit_large_patch32_384": dict(orig_in21k_ft_in1k=(1000, INCEPTION)),
    "vit_huge_patch14_224": dict(orig_in21k=(0, INCEPTION), mae=(0, IMAGENET, "cc-by-nc-4.0")),
    "deit_tiny_patch16_224": dict(fb_in1k=(1000, IMAGENET)),
    "deit_small_patch16_224": dict(fb_in1k=(1000, IMAGENET)),
    "deit_base_patch16_224": dict(fb_in1k=(1000, IMAGENET)),
    "deit_base_patch16_384": dict(fb_in1k=(1000, IMAGENET)),
    "deit_tiny_distilled_patch16_224": dict(fb_in1k=(1000, IMAGENET)),
    "deit_small_distilled_patch16_224": dict(fb_in1k=(1000, IMAGENET)),
    "deit_base_distilled_patch16_224": dict(fb_in1k=(1000, IMAGENET)),
    "deit_base_distilled_patch16_384": dict(fb_in1k=(1000, IMAGENET)),
}
# fmt: on

#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {name: _preset(name, weights) for name, weights in WEIGHTS.items()}
