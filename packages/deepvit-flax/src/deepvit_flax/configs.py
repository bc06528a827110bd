"""Named :class:`~deepvit_flax.DeepViT` configurations: the README's, the small training
recipe's and the paper's variants."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(depth: int) -> dict[str, Any]:
    # 16 px patches, width 384, 12 heads (of 32), MLP ratio 3, at 224 x 224
    return dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=depth, heads=12,
                dim_head=32, mlp_dim=1152)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README usage (vit-pytorch's README configuration)
    "readme": dict(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16,
                   mlp_dim=2048, dropout=0.1, emb_dropout=0.1),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data
    "small": dict(image_size=16, patch_size=4, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128,
                  dropout=0.1, emb_dropout=0.1),
    # Zhou et al., "DeepViT: Towards Deeper Vision Transformer" (arXiv:2103.11886): the
    # DeepViT-16B, -24B and -32B it compares with ViTs of the same depth, re-attention in
    # every block (the authors' deepvit_patch16_224_re_attn_{16,24,32}b). Its DeepViT-S and
    # -L re-attend in the last blocks only, after a convolutional stem: not this model.
    "deepvit_16b": _paper(16),
    "deepvit_24b": _paper(24),
    "deepvit_32b": _paper(32),
}
# fmt: on
