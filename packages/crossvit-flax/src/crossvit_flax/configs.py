"""Named :class:`~crossvit_flax.CrossViT` configurations: the README's, the small training
recipe's and the paper's variants."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: int, heads: int, lg_enc_depth: int, mlp_ratio: int) -> dict[str, Any]:
    """A variant of Table 1: patches of 12 and 16, ``K = 3`` multi-scale blocks of ``N = 1``
    small-branch and ``M = lg_enc_depth`` large-branch layers and ``L = 1`` cross-attention
    round, ``heads`` heads of ``dim / heads`` (small) and ``2 dim / heads`` (large) channels."""
    return dict(image_size=240, num_classes=1000, depth=3, sm_dim=dim, sm_patch_size=12, sm_enc_depth=1,
                sm_enc_heads=heads, sm_enc_dim_head=dim // heads, sm_enc_mlp_dim=mlp_ratio * dim, lg_dim=2 * dim,
                lg_patch_size=16, lg_enc_depth=lg_enc_depth, lg_enc_heads=heads,
                lg_enc_dim_head=2 * dim // heads, lg_enc_mlp_dim=mlp_ratio * 2 * dim, cross_attn_depth=1,
                cross_attn_heads=heads, cross_attn_dim_head=2 * dim // heads, dropout=0.0, emb_dropout=0.0)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README usage (vit-pytorch's README configuration)
    "readme": dict(image_size=256, num_classes=1000, depth=4, sm_dim=192, sm_patch_size=16, sm_enc_depth=2,
                   sm_enc_heads=8, sm_enc_mlp_dim=2048, lg_dim=384, lg_patch_size=64, lg_enc_depth=3,
                   lg_enc_heads=8, lg_enc_mlp_dim=2048, cross_attn_depth=2, cross_attn_heads=8, dropout=0.1,
                   emb_dropout=0.1),
    # the small training recipe (examples/configs.py)
    "small": dict(image_size=16, sm_dim=32, lg_dim=64, sm_patch_size=2, sm_enc_depth=1, sm_enc_heads=2,
                  sm_enc_mlp_dim=64, sm_enc_dim_head=16, lg_patch_size=4, lg_enc_depth=2, lg_enc_heads=4,
                  lg_enc_mlp_dim=128, lg_enc_dim_head=16, cross_attn_depth=1, cross_attn_heads=2,
                  cross_attn_dim_head=16, depth=2),
    # Chen, Fan and Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
    # Classification" (ICCV 2021), Table 1: CrossViT-Ti, -S, -B, -9, -15 and -18
    "crossvit_ti": _paper(96, 3, lg_enc_depth=4, mlp_ratio=4),
    "crossvit_s": _paper(192, 6, lg_enc_depth=4, mlp_ratio=4),
    "crossvit_b": _paper(384, 12, lg_enc_depth=4, mlp_ratio=4),
    "crossvit_9": _paper(128, 4, lg_enc_depth=3, mlp_ratio=3),
    "crossvit_15": _paper(192, 6, lg_enc_depth=5, mlp_ratio=3),
    "crossvit_18": _paper(224, 7, lg_enc_depth=6, mlp_ratio=3),
}
# fmt: on
