"""The pretrained Twins-SVT presets, by timm's names, registered with
:func:`vit_layers_flax.create_model` through the ``vit_layers_flax.presets`` entry point.

Each is the original Twins-SVT (Chu et al., "Twins: Revisiting the Design of Spatial
Attention in Vision Transformers", NeurIPS 2021; timm's ``Twins`` with windows:
:data:`~twins_svt_flax.TIMM_ARCHITECTURE`) at one of the paper's sizes, Twins-SVT-S, -B and
-L, for 224 x 224 images: patches of 4, 2, 2, 2, 7 x 7 windows, global sub-sampling by 8, 4,
2, 1, heads of 32 channels, MLPs 4 times the width. The weights are the paper's authors'
(Meituan's) on ImageNet-1k, as timm publishes them on the Hugging Face Hub
(``timm/<name>.<tag>``, ``model.safetensors``).
"""

from __future__ import annotations

from typing import Any

from twins_svt_flax.convert import TIMM_ARCHITECTURE, from_timm
from twins_svt_flax.twins_svt import NUM_STAGES, TwinsSVT
from vit_layers_flax import Preset, PretrainedConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DIM_HEAD = 32

#: each name's (widths, depths) as timm gives them: a stage's depth counts timm's blocks,
#: alternately local and global attention, so two of them make one ``TwinsBlock``
SIZES = {
    "twins_svt_small": ((64, 128, 256, 512), (2, 2, 10, 4)),
    "twins_svt_base": ((96, 192, 384, 768), (2, 2, 18, 2)),
    "twins_svt_large": ((128, 256, 512, 1024), (2, 2, 18, 2)),
}


def _config(dims: tuple[int, ...], depths: tuple[int, ...]) -> dict[str, Any]:
    config: dict[str, Any] = dict(num_classes=1000, image_size=224, dim_head=DIM_HEAD, peg_kernel_size=3)
    stages = zip(dims, depths, (4, 2, 2, 2), (8, 4, 2, 1), strict=True)
    for stage, (dim, depth, patch, global_k) in enumerate(stages, start=1):
        config |= {
            f"s{stage}_emb_dim": dim,
            f"s{stage}_patch_size": patch,
            f"s{stage}_local_patch_size": 7,
            f"s{stage}_global_k": global_k,
            f"s{stage}_depth": depth // 2 - 1,  # TwinsBlocks after the first (the PEG's)
            f"s{stage}_heads": dim // DIM_HEAD,
        }
    assert len(dims) == NUM_STAGES
    return config | TIMM_ARCHITECTURE


def _preset(name: str, tags: tuple[str, ...]) -> Preset:
    mean, std = IMAGENET
    return Preset(
        TwinsSVT,
        _config(*SIZES[name]),
        from_timm,
        classifier=("head",),
        weights={
            tag: PretrainedConfig(
                hub_id=f"timm/{name}.{tag}",
                num_classes=1000,
                input_size=(224, 224),
                mean=mean,
                std=std,
                crop_pct=0.9,
                interpolation="bicubic",
                license="apache-2.0",
            )
            for tag in tags
        },
    )


#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {name: _preset(name, ("in1k",)) for name in SIZES}
