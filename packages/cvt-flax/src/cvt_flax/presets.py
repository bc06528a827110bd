"""The pretrained CvT presets, registered with :func:`vit_layers_flax.create_model` through the
``vit_layers_flax.presets`` entry point.

Microsoft's seven CvT checkpoints on the Hugging Face Hub (``microsoft/cvt-*``, converted from
the original repository for transformers' ``CvtForImageClassification``; ``pytorch_model.bin``
files, read with ``torch.load(weights_only=True)``), each a preset named after its repository
(``microsoft/cvt-13-384-22k`` -> ``cvt_13_384_22k``) with one weight tag: ``in1k`` (trained on
ImageNet-1k) or ``in22k_ft_in1k`` (pretrained on ImageNet-22k, fine-tuned on ImageNet-1k).
Every checkpoint classifies the 1000 ImageNet-1k classes.

The architecture is the original CvT's (Wu et al., ICCV 2021; transformers' ``CvtConfig``
defaults): embeddings 7 x 7 stride 4 padding 2, then 3 x 3 stride 2 padding 1; 3 x 3
depthwise projections, keys and values of stride 2, with biased linear projections; heads of
64 channels whose logits are scaled by the stage width; MLPs 4 times wide; a class token in
the last stage, classified after a LayerNorm. CvT-13 is ``depth (1, 2, 10)``, CvT-21 ``(1, 4,
16)``, both ``dims (64, 192, 384)``, ``heads (1, 3, 6)``; CvT-W24 ``depth (2, 2, 20)``, ``dims
(192, 768, 1024)``, ``heads (3, 12, 16)`` (transformers' conversion script,
``convert_cvt_original_pytorch_checkpoint_to_pytorch.py``).

The evaluation transform is the one that script saved with every checkpoint, transformers'
``ConvNextImageProcessor`` (of ``facebook/convnext-base-224-22k-1k``) at the checkpoint's size:
bicubic, ImageNet mean and std; at 224 the shorter side resized to ``224 / 0.875`` and the
centre cropped (``crop_pct`` 0.875), at 384 the image resized to 384 x 384 without a crop
(the processor crops only below 384: ``crop_pct`` 1.0). The model cards give the licence,
Apache-2.0.
"""

from __future__ import annotations

import re
from typing import Any

from cvt_flax.convert import from_transformers
from cvt_flax.cvt import CvT
from vit_layers_flax import Preset, PretrainedConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (dims, heads, depths) of each size
SIZES = {
    "13": ((64, 192, 384), (1, 3, 6), (1, 2, 10)),
    "21": ((64, 192, 384), (1, 3, 6), (1, 4, 16)),
    "w24": ((192, 768, 1024), (3, 12, 16), (2, 2, 20)),
}

#: the original CvT's architecture options of :class:`~cvt_flax.CvT` (the defaults are vit-pytorch's)
ORIGINAL = dict(
    s1_emb_padding=2,
    s2_emb_padding=1,
    s3_emb_padding=1,
    qkv_bias=True,
    separate_kv=True,
    full_dim_scale=True,
    cls_token=True,
    final_norm=True,
)


def config(size: str, image_size: int = 224) -> dict[str, Any]:
    """The :class:`~cvt_flax.CvT` keywords of CvT-``size`` (``"13"``, ``"21"``, ``"w24"``)."""
    dims, heads, depths = SIZES[size]
    out: dict[str, Any] = dict(num_classes=1000, image_size=image_size, **ORIGINAL)
    for stage, (dim, head, depth) in enumerate(zip(dims, heads, depths, strict=True), start=1):
        out |= {f"s{stage}_emb_dim": dim, f"s{stage}_heads": head, f"s{stage}_depth": depth}
    return out


def _preset(name: str) -> Preset:
    size, image, pretraining = re.fullmatch(r"cvt_(\w+?)(?:_(384))?(_22k)?", name).groups()
    image = int(image or 224)
    tag = "in22k_ft_in1k" if pretraining else "in1k"
    mean, std = IMAGENET
    weights = PretrainedConfig(
        hub_id="microsoft/" + name.replace("_", "-"),
        num_classes=1000,
        input_size=(image, image),
        mean=mean,
        std=std,
        crop_pct=0.875 if image < 384 else 1.0,
        interpolation="bicubic",
        license="apache-2.0",
        filename="pytorch_model.bin",
    )
    return Preset(
        CvT, config(size, image), from_transformers, classifier=("classifier",), weights={tag: weights}
    )


NAMES = (
    "cvt_13",
    "cvt_13_384",
    "cvt_13_384_22k",
    "cvt_21",
    "cvt_21_384",
    "cvt_21_384_22k",
    "cvt_w24_384_22k",
)

#: name -> :class:`~vit_layers_flax.Preset`: the entry point ``vit_layers_flax.presets`` loads this
PRESETS: dict[str, Preset] = {name: _preset(name) for name in NAMES}
