"""CaiT's named configurations: constructor keywords for :class:`cait_flax.CaiT`."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: int, depth: int) -> dict[str, Any]:
    # CaiT models (Touvron et al., 2021, arXiv:2103.17239, the table of CaiT models):
    # 16 px patches, heads of width 48, MLP ratio 4, two class-attention layers
    return dict(image_size=224, patch_size=16, num_classes=1000, dim=dim, depth=depth, cls_depth=2,
                heads=dim // 48, dim_head=48, mlp_dim=4 * dim)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage
    "readme": dict(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=12, cls_depth=2,
                   heads=16, mlp_dim=2048, dropout=0.1, emb_dropout=0.1, layer_dropout=0.05),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=4, dim=64, depth=4, cls_depth=1, heads=4, dim_head=16,
                  mlp_dim=128, dropout=0.1, emb_dropout=0.1),
    "cait_xxs24": _paper(192, 24),
    "cait_xxs36": _paper(192, 36),
    "cait_xs24": _paper(288, 24),
    "cait_xs36": _paper(288, 36),
    "cait_s24": _paper(384, 24),
    "cait_s36": _paper(384, 36),
    "cait_s48": _paper(384, 48),
    "cait_m24": _paper(768, 24),
    "cait_m36": _paper(768, 36),
    "cait_m48": _paper(768, 48),
}
# fmt: on
