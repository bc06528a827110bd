"""Named :class:`~regionvit_flax.RegionViT` configurations: the README's, the small training
recipe's and the paper's variants."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: int, depth: tuple[int, int, int, int], tokenize_local_3_conv: bool) -> dict[str, Any]:
    # Chen, Panda and Fan, "RegionViT: Regional-to-Local Attention for Vision Transformers"
    # (ICLR 2022, arXiv:2106.02689), Table 1 (the model architectures): widths C, 2C, 4C, 8C,
    # 7x7 windows (28 px regional patches over 4 px local ones), the 3-conv local tokenizer for
    # the two smaller models. vit-pytorch fixes the attention at 4 heads of 32 channels, where
    # the paper's heads grow with the width, so its parameter counts are smaller than the paper's.
    return dict(dim=(dim, 2 * dim, 4 * dim, 8 * dim), depth=depth, window_size=7, num_classes=1000,
                tokenize_local_3_conv=tokenize_local_3_conv)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage (vit-pytorch's README configuration)
    "readme": dict(dim=(64, 128, 256, 512), depth=(2, 2, 8, 2), window_size=7, num_classes=1000,
                   tokenize_local_3_conv=False, use_peg=False),
    # the small training recipe (examples/configs.py), for 32 x 32 images; num_classes and
    # channels come from the data
    "small": dict(dim=(32, 48, 64, 96), depth=(1, 1, 1, 2), window_size=2, ff_dropout=0.1),
    "regionvit_ti": _paper(64, (2, 2, 8, 2), tokenize_local_3_conv=True),
    "regionvit_s": _paper(96, (2, 2, 8, 2), tokenize_local_3_conv=True),
    "regionvit_m": _paper(96, (2, 2, 14, 2), tokenize_local_3_conv=False),
    "regionvit_b": _paper(128, (2, 2, 14, 2), tokenize_local_3_conv=False),
}
# fmt: on
