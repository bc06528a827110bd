"""Named :class:`~twins_svt_flax.TwinsSVT` configurations (constructor keywords)."""

from __future__ import annotations

from typing import Any


def _paper(dims: tuple[int, ...], depths: tuple[int, ...]) -> dict[str, Any]:
    """A Twins-SVT of the paper's Table 2 (``dims``, and ``depths`` counted in the paper's
    layers: one attention and one MLP each), with its 4, 2, 2, 2 patches, 7 x 7 windows and
    8, 4, 2, 1 global sub-sampling. A vit-pytorch block holds two of the paper's layers (local
    and global attention) in stages 1 to 3 and one (global) in stage 4, where the paper's
    7 x 7 window covers the whole 7 x 7 map; a stage has ``depth + 1`` blocks."""
    config: dict[str, Any] = {"num_classes": 1000}
    stages = zip(dims, depths, (8, 4, 2, 1), (2, 2, 2, 1), strict=True)
    for stage, (dim, depth, global_k, layers_per_block) in enumerate(stages, start=1):
        config |= {
            f"s{stage}_emb_dim": dim,
            f"s{stage}_patch_size": 4 if stage == 1 else 2,
            f"s{stage}_local_patch_size": 7,
            f"s{stage}_global_k": global_k,
            f"s{stage}_depth": depth // layers_per_block - 1,
        }
    return config


# fmt: off
CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage (vit-pytorch's defaults)
    "readme": dict(num_classes=1000, s1_emb_dim=64, s1_patch_size=4, s1_local_patch_size=7, s1_global_k=7,
                   s1_depth=1, s2_emb_dim=128, s2_patch_size=2, s2_local_patch_size=7, s2_global_k=7, s2_depth=1,
                   s3_emb_dim=256, s3_patch_size=2, s3_local_patch_size=7, s3_global_k=7, s3_depth=5,
                   s4_emb_dim=512, s4_patch_size=2, s4_local_patch_size=7, s4_global_k=7, s4_depth=4,
                   peg_kernel_size=3, dropout=0.0),
    # the small training recipe (examples/configs.py), 32 x 32 images
    "small": dict(s1_emb_dim=32, s1_patch_size=4, s1_local_patch_size=4, s1_global_k=4, s2_emb_dim=64,
                  s2_local_patch_size=2, s2_global_k=2, s3_emb_dim=96, s3_local_patch_size=2, s3_global_k=2,
                  s3_depth=2, s4_emb_dim=128, s4_local_patch_size=2, s4_global_k=1, s4_depth=1, dropout=0.1),
    # Chu et al., 2021, Table 2: Twins-SVT-S, -B and -L for 224 x 224 images. vit-pytorch's
    # TwinsSVT fixes every attention at 8 heads of 64 channels (the paper's have 32 channels,
    # 2 to 32 heads), so these have the paper's shape but more parameters.
    "twins_svt_s": _paper((64, 128, 256, 512), (2, 2, 10, 4)),
    "twins_svt_b": _paper((96, 192, 384, 768), (2, 2, 18, 2)),
    "twins_svt_l": _paper((128, 256, 512, 1024), (2, 2, 18, 2)),
}
# fmt: on
