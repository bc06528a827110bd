"""Named :class:`~levit_flax.LeViT` configurations: the README's, the small training recipe's and
the paper's variants."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(dim: tuple[int, int, int], depth: tuple[int, int, int], heads: tuple[int, int, int], key: int):
    # Graham et al., "LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference"
    # (ICCV 2021, arXiv:2104.01136), Table 2 (the LeViT models): per-stage width C, blocks and
    # heads N, key width D, values 2D wide, MLP expansion 2. vit-pytorch's stem (32, 64, 128
    # channels) and shrinking blocks (2N heads of width D) are its own, so the parameter counts
    # differ a little from the paper's; its models also carry a distillation head
    # (num_distill_classes=1000).
    return dict(image_size=224, num_classes=1000, stages=3, dim=dim, depth=depth, heads=heads, mlp_mult=2,
                dim_key=key, dim_value=2 * key)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage (vit-pytorch's README configuration)
    "readme": dict(image_size=224, num_classes=1000, stages=3, dim=(256, 384, 512), depth=4,
                   heads=(4, 6, 8), mlp_mult=2, dropout=0.1),
    # the small training recipe (examples/configs.py); num_classes comes from the data
    # the small recipe has two stages on purpose: vit-pytorch's LeViT zero-initialises the scale of
    # every attention's output BatchNorm and gives downsampling blocks no residual, so the stage
    # after a downsampling block starts from a batch-constant map that train-mode BatchNorm turns
    # into zeros; a second downsampling block would pass no gradient back
    "small": dict(image_size=64, dim=(64, 128), depth=2, heads=(2, 4), mlp_mult=2, stages=2, dim_key=16,
                  dim_value=32),
    "levit_128s": _paper((128, 256, 384), (2, 3, 4), (4, 6, 8), 16),
    "levit_128": _paper((128, 256, 384), (4, 4, 4), (4, 8, 12), 16),
    "levit_192": _paper((192, 288, 384), (4, 4, 4), (3, 5, 6), 32),
    "levit_256": _paper((256, 384, 512), (4, 4, 4), (4, 6, 8), 32),
    "levit_384": _paper((384, 512, 768), (4, 4, 4), (6, 9, 12), 32),
}
# fmt: on
