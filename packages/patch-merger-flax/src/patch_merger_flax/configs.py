"""The named configurations of :class:`patch_merger_flax.ViT` (constructor keywords).

The paper attaches the PatchMerger to the ViT models it studies and defines no variants of
its own, so there are no paper configurations here.
"""

from __future__ import annotations

from typing import Any

# fmt: off
CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage
    "readme": dict(image_size=256, patch_size=16, num_classes=1000, dim=1024, depth=12, heads=8,
                   patch_merge_layer=6, patch_merge_num_tokens=8, mlp_dim=2048, dropout=0.1, emb_dropout=0.1),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=4, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128,
                  patch_merge_layer=2, patch_merge_num_tokens=8, dropout=0.1, emb_dropout=0.1),
}
# fmt: on
