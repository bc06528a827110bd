"""Named :class:`~vision_transformer_flax.ViT` configurations: the README's, the small training
recipe's and the paper's variants."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(patch_size: int, dim: int, depth: int, heads: int, mlp_dim: int) -> dict[str, Any]:
    return dict(image_size=224, patch_size=patch_size, num_classes=1000, dim=dim, depth=depth, heads=heads,
                dim_head=dim // heads, mlp_dim=mlp_dim)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README usage (vit-pytorch's README configuration)
    "readme": dict(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16,
                   mlp_dim=2048, dropout=0.1, emb_dropout=0.1),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=4, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128,
                  dropout=0.1, emb_dropout=0.1),
    # Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021), Table 1: ViT-Base,
    # -Large and -Huge with the patch sizes the paper trains them with, at 224 x 224
    # Touvron et al., "Training data-efficient image transformers" (ICML 2021): ViT-S/16 (DeiT-S)
    "vit_s16": _paper(16, 384, 12, 6, 1536),
    "vit_b16": _paper(16, 768, 12, 12, 3072),
    "vit_b32": _paper(32, 768, 12, 12, 3072),
    "vit_l16": _paper(16, 1024, 24, 16, 4096),
    "vit_l32": _paper(32, 1024, 24, 16, 4096),
    "vit_h14": _paper(14, 1280, 32, 16, 5120),
}
# fmt: on
