"""T2T-ViT's named configurations: constructor keywords for :class:`t2t_vit_flax.T2TViT`."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: int, depth: int, mlp_ratio: int) -> dict[str, Any]:
    # T2T-ViT backbones (Yuan et al., 2021, arXiv:2101.11986, Table 1: hidden dim, heads of
    # width 64, MLP size, depth) behind the paper's soft splits (7, 4), (3, 2), (3, 2).
    # vit-pytorch's tokens-to-token module has no 64-wide token projection (its soft-split
    # transformers are as wide as the unfolded tokens), so that module differs from the paper's
    return dict(image_size=224, num_classes=1000, dim=dim, depth=depth, heads=dim // 64, dim_head=64,
                mlp_dim=mlp_ratio * dim, t2t_layers=((7, 4), (3, 2), (3, 2)))


CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage
    "readme": dict(dim=512, image_size=224, depth=5, heads=8, mlp_dim=512, num_classes=1000,
                   t2t_layers=((7, 4), (3, 2), (3, 2))),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128,
                  t2t_layers=((3, 2), (3, 2)), dropout=0.1, emb_dropout=0.1),
    "t2t_vit_7": _paper(256, 7, 2),
    "t2t_vit_10": _paper(256, 10, 2),
    "t2t_vit_12": _paper(256, 12, 2),
    "t2t_vit_14": _paper(384, 14, 3),
    "t2t_vit_19": _paper(448, 19, 3),
    "t2t_vit_24": _paper(512, 24, 3),
}
# fmt: on
