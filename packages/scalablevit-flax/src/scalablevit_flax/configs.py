"""Named :class:`~scalablevit_flax.ScalableViT` configurations (constructor keywords)."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: int, depths: tuple[int, ...], channel_ratios: tuple[float, ...]) -> dict[str, Any]:
    """A ScalableViT of the paper's configurations: stage widths ``dim * 2 ** s`` in heads of
    32 channels, SSA keys of ``32 * channel_ratio`` channels, key / value reduction 8, 4, 2, 1
    and 7 x 7 IWSA windows. ``depths`` counts the paper's blocks (one attention, SSA or IWSA,
    and one MLP each); a vit-pytorch block holds one of each attention, hence half as many."""
    return dict(num_classes=1000, dim=dim, depth=tuple(d // 2 for d in depths),
                heads=tuple(dim * 2**s // 32 for s in range(4)),
                ssa_dim_key=tuple(round(32 * ratio) for ratio in channel_ratios), reduction_factor=(8, 4, 2, 1),
                window_size=7)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage (vit-pytorch's README configuration)
    "readme": dict(num_classes=1000, dim=64, heads=(2, 4, 8, 16), depth=(2, 2, 20, 2),
                   ssa_dim_key=(40, 40, 40, 32), reduction_factor=(8, 4, 2, 1), window_size=(64, 32, None, None),
                   dropout=0.1),
    # the small training recipe (examples/configs.py), 32 x 32 images
    "small": dict(dim=32, depth=(1, 1, 1, 1), heads=(1, 1, 2, 2), reduction_factor=(2, 1, 1, 1),
                  window_size=(4, 2, None, None), dropout=0.1),
    # Yang et al., 2022: ScalableViT-S, -B and -L for 224 x 224 images, as the authors' released
    # scalable_vit_small / _base / _large build them (the paper's Table 1). vit-pytorch's stem,
    # downsampling, block order and head differ from the paper's, so parameter counts do too.
    "scalablevit_s": _paper(64, (2, 2, 20, 2), (1.25, 1.25, 1.25, 1)),
    "scalablevit_b": _paper(96, (2, 2, 14, 6), (2, 1.25, 1.25, 1)),
    "scalablevit_l": _paper(128, (2, 6, 12, 4), (0.25, 0.5, 1, 1)),
}
# fmt: on
