"""Named :class:`~vit_small_datasets_flax.ViT` configurations: the README's, the small training
recipe's and the paper's."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(image_size: int, patch_size: int, num_classes: int) -> dict[str, Any]:
    # width 192, depth 9, 12 heads of 16, MLP ratio 2
    return dict(image_size=image_size, patch_size=patch_size, num_classes=num_classes, dim=192, depth=9,
                heads=12, dim_head=16, mlp_dim=384)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README usage (vit-pytorch's README configuration)
    "readme": dict(image_size=256, patch_size=16, num_classes=1000, dim=1024, depth=6, heads=16,
                   mlp_dim=2048, dropout=0.1, emb_dropout=0.1),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=4, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128,
                  dropout=0.1, emb_dropout=0.1),
    # Lee, Lee and Song, "Vision Transformer for Small-Size Datasets" (arXiv:2112.13492): the
    # ViT with SPT and LSA (SL-ViT) the paper trains on CIFAR-100 (32 x 32, 4 px patches) and
    # Tiny-ImageNet (64 x 64, 8 px patches), as the authors' code builds it
    "sl_vit_cifar100": _paper(32, 4, 100),
    "sl_vit_tiny_imagenet": _paper(64, 8, 200),
}
# fmt: on
