"""Named :class:`~crossformer_flax.CrossFormer` configurations: the README's, the small training
recipe's and the paper's variants."""

from __future__ import annotations

from typing import Any

#: the cross-scale embeddings of every paper variant (Table 1): kernels 4, 8, 16, 32 with
#: stride 4, then kernels 2, 4 with stride 2
# fmt: off
_PAPER_EMBEDDINGS = dict(cross_embed_kernel_sizes=((4, 8, 16, 32), (2, 4), (2, 4), (2, 4)),
                         cross_embed_strides=(4, 2, 2, 2))

#: the paper's group size G = 7 for the short-distance windows and interval I = 8, 4, 2, 1
#: as the long-distance windows (vit-pytorch's mapping); 32 channels per head throughout
_PAPER_WINDOWS = dict(local_window_size=7, global_window_size=(8, 4, 2, 1))


def _paper(dim: int, depth: tuple[int, int, int, int]) -> dict[str, Any]:
    return dict(num_classes=1000, dim=(dim, 2 * dim, 4 * dim, 8 * dim), depth=depth, **_PAPER_WINDOWS,
                **_PAPER_EMBEDDINGS)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README usage (vit-pytorch's README configuration)
    "readme": dict(num_classes=1000, dim=(64, 128, 256, 512), depth=(2, 2, 8, 2),
                   global_window_size=(8, 4, 2, 1), local_window_size=7),
    # the small training recipe (examples/configs.py), for 32 x 32 images
    "small": dict(dim=(32, 64, 64, 96), depth=(1, 1, 1, 1), global_window_size=(4, 2, 2, 2),
                  local_window_size=(4, 4, 2, 2), cross_embed_kernel_sizes=((2, 4), (2, 4), (2, 4), (2, 4)),
                  cross_embed_strides=(2, 2, 2, 2), ff_dropout=0.1),
    # Wang et al., "CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale
    # Attention" (ICLR 2022), Table 1: CrossFormer-T, -S, -B and -L at 224 x 224
    "crossformer_t": _paper(64, (1, 1, 8, 6)),
    "crossformer_s": _paper(96, (2, 2, 6, 2)),
    "crossformer_b": _paper(96, (2, 2, 18, 2)),
    "crossformer_l": _paper(128, (2, 2, 18, 2)),
}
# fmt: on
