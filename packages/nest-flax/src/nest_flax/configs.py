"""Named :class:`~nest_flax.NesT` configurations: the README's, the small training recipe's and
the paper's variants."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: int, heads: int, depth: int) -> dict[str, Any]:
    # Zhang et al., "Nested Hierarchical Transformer" (AAAI 2022, arXiv:2105.12723), the
    # ImageNet models NesT-T, NesT-S and NesT-B of its ImageNet table (17M, 38M and 68M
    # parameters, as these give): 4 px patches, three hierarchies of (2, 2, depth) blocks, the
    # width and heads doubling per level
    return dict(image_size=224, patch_size=4, num_classes=1000, dim=dim, heads=heads, num_hierarchies=3,
                block_repeats=(2, 2, depth))


CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage (vit-pytorch's README configuration, which is NesT-T)
    "readme": dict(image_size=224, patch_size=4, dim=96, heads=3, num_hierarchies=3,
                   block_repeats=(2, 2, 8), num_classes=1000),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=2, dim=64, heads=4, dim_head=16, num_hierarchies=2,
                  block_repeats=(2, 2), dropout=0.1),
    "nest_t": _paper(96, 3, 8),
    "nest_s": _paper(96, 3, 20),
    "nest_b": _paper(128, 4, 20),
}
# fmt: on
