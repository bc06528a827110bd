"""Named :class:`~cvt_flax.CvT` configurations (constructor keywords)."""

from __future__ import annotations

from typing import Any


def _paper(dims: tuple[int, ...], heads: tuple[int, ...], depths: tuple[int, ...]) -> dict[str, Any]:
    """A variant of the paper's Table 2; its embeddings (7 x 7 stride 4, then 3 x 3 stride 2),
    3 x 3 projections with stride-2 keys and values, 64-channel heads and MLP ratio 4 are
    :class:`~cvt_flax.CvT`'s defaults."""
    config: dict[str, Any] = {"num_classes": 1000}
    for stage, (dim, head, depth) in enumerate(zip(dims, heads, depths, strict=True), start=1):
        config |= {f"s{stage}_emb_dim": dim, f"s{stage}_heads": head, f"s{stage}_depth": depth}
    return config


# fmt: off
CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage
    "readme": dict(num_classes=1000, s1_emb_dim=64, s1_emb_kernel=7, s1_emb_stride=4, s1_proj_kernel=3,
                   s1_kv_proj_stride=2, s1_heads=1, s1_depth=1, s1_mlp_mult=4, s2_emb_dim=192, s2_emb_kernel=3,
                   s2_emb_stride=2, s2_proj_kernel=3, s2_kv_proj_stride=2, s2_heads=3, s2_depth=2, s2_mlp_mult=4,
                   s3_emb_dim=384, s3_emb_kernel=3, s3_emb_stride=2, s3_proj_kernel=3, s3_kv_proj_stride=2,
                   s3_heads=4, s3_depth=10, s3_mlp_mult=4, dropout=0.0),
    # the small training recipe (examples/configs.py), 16 x 16 images
    "small": dict(s1_emb_dim=32, s1_emb_stride=2, s2_emb_dim=64, s2_heads=2, s2_depth=1, s3_emb_dim=96,
                  s3_heads=3, s3_depth=2, dropout=0.1),
    # Wu et al., 2021, Table 2 (224 x 224 images). The paper's last stage also has a class
    # token, which vit-pytorch's CvT leaves out: it classifies the mean of the last map.
    "cvt_13": _paper((64, 192, 384), (1, 3, 6), (1, 2, 10)),
    "cvt_21": _paper((64, 192, 384), (1, 3, 6), (1, 4, 16)),
    "cvt_w24": _paper((192, 768, 1024), (3, 12, 16), (2, 2, 20)),
}
# fmt: on
