"""Named :class:`~parallel_vit_flax.ViT` configurations: the README's, the small training
recipe's and the paper's variants."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: int, depth: int, heads: int) -> dict[str, Any]:
    # 16 px patches, heads of 64, MLP ratio 4, two branches per layer, at 224 x 224
    return dict(image_size=224, patch_size=16, num_classes=1000, dim=dim, depth=depth, heads=heads,
                dim_head=64, mlp_dim=4 * dim, num_parallel_branches=2)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README usage (vit-pytorch's README configuration)
    "readme": dict(image_size=256, patch_size=16, num_classes=1000, dim=1024, depth=6, heads=8,
                   mlp_dim=2048, num_parallel_branches=2, dropout=0.1, emb_dropout=0.1),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=4, dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128,
                  dropout=0.1, emb_dropout=0.1),
    # Touvron et al., "Three things everyone should know about Vision Transformers" (ECCV
    # 2022): ViT-S18x2 and ViT-B18x2, the parallel counterparts of ViT-S36 and ViT-B36 (18
    # layers of two branches; the authors' deit_{small,base}_patch16_18x2)
    "vit_s18x2": _paper(384, 18, 6),
    "vit_b18x2": _paper(768, 18, 12),
}
# fmt: on
