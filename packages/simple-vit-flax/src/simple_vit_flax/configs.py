"""Named :class:`~simple_vit_flax.SimpleViT` configurations: the README's, the small training
recipe's and the paper's."""

from __future__ import annotations

from typing import Any

# fmt: off
CONFIGS: dict[str, dict[str, Any]] = {
    # the README usage (vit-pytorch's README configuration)
    "readme": dict(
        image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048
    ),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=4, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128),
    # Beyer, Zhai and Kolesnikov, "Better plain ViT baselines for ImageNet-1k" (2022): the
    # ViT-S/16 the paper trains, at 224 x 224 (width 384, depth 12, 6 heads, MLP 1536)
    "vit_s16": dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=12, heads=6,
                    dim_head=64, mlp_dim=1536),
}
# fmt: on
