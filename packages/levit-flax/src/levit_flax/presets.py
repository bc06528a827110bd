"""The pretrained LeViT presets, by timm's names, registered with
:func:`vit_layers_flax.create_model` through the ``vit_layers_flax.presets`` entry point.

Each is the original LeViT architecture (Graham et al., "LeViT: a Vision Transformer in
ConvNet's Clothing for Faster Inference", ICCV 2021; timm's ``LevitDistilled``:
:data:`~levit_flax.TIMM_ARCHITECTURE`, a stem of widths ``dim / 8, dim / 4, dim / 2``, values
twice the key width, downsampling blocks of ``dim / dim_key`` heads with values four times
the key width, MLPs twice as wide, the distillation head averaged with the head) at one of the
paper's sizes, LeViT-128S, -128, -192, -256 and -384, with the authors' ImageNet-1k weights
(distilled from a RegNetY-16GF) that timm publishes on the Hugging Face Hub
(``timm/<name>.<tag>``, ``model.safetensors``). timm publishes each twice: ``levit_*`` in its
linear layout and ``levit_conv_*`` in its conv layout (1x1 convolutions for the linear layers,
NCHW); both compute the same function, and both names build the same model here, the
converter reading either layout.
"""

from __future__ import annotations

from levit_flax.convert import TIMM_ARCHITECTURE, from_timm
from levit_flax.levit import LeViT
from vit_layers_flax import Preset, PretrainedConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (dim, dim_key, heads, depth) of each size, timm's ``model_cfgs``
SIZES = {
    "128s": ((128, 256, 384), 16, (4, 6, 8), (2, 3, 4)),
    "128": ((128, 256, 384), 16, (4, 8, 12), (4, 4, 4)),
    "192": ((192, 288, 384), 32, (3, 5, 6), (4, 4, 4)),
    "256": ((256, 384, 512), 32, (4, 6, 8), (4, 4, 4)),
    "384": ((384, 512, 768), 32, (6, 9, 12), (4, 4, 4)),
}


def timm_config(size: str) -> dict:
    """The :class:`~levit_flax.LeViT` keywords of timm's ``levit_<size>`` (224 x 224, 1000 classes)."""
    dim, key, heads, depth = SIZES[size]
    return dict(image_size=224, num_classes=1000, stages=3, dim=dim, depth=depth, heads=heads, mlp_mult=2,
                dim_key=key, dim_value=2 * key, stem_widths=(dim[0] // 8, dim[0] // 4, dim[0] // 2),
                downsample_heads=tuple(d // key for d in dim[:-1]), downsample_dim_value=4 * key,
                distilled=True) | TIMM_ARCHITECTURE  # fmt: skip


def _preset(name: str, size: str) -> Preset:
    return Preset(
        LeViT,
        timm_config(size),
        from_timm,
        classifier=("head.linear", "head_dist.linear"),
        weights={
            "fb_dist_in1k": PretrainedConfig(
                hub_id=f"timm/{name}.fb_dist_in1k",
                num_classes=1000,
                input_size=(224, 224),
                mean=IMAGENET[0],
                std=IMAGENET[1],
                crop_pct=0.9,
                interpolation="bicubic",
                license="apache-2.0",
            )
        },
    )


#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {
    f"levit_{layout}{size}": _preset(f"levit_{layout}{size}", size)
    for layout in ("", "conv_")
    for size in SIZES
}
