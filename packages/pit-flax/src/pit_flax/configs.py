"""PiT's named configurations: constructor keywords for :class:`pit_flax.PiT`."""

from __future__ import annotations

from typing import Any


# fmt: off
def _paper(patch_size: int, dim_head: int, depth: tuple[int, ...], heads: tuple[int, ...]) -> dict[str, Any]:
    # PiT models (Heo et al., 2021, arXiv:2103.16302, the table of PiT architectures): the
    # first stage is heads[0] * dim_head wide. vit-pytorch's PiT has one mlp_dim for every
    # stage, so the paper's MLP ratio 4 holds in the first stage only (2 and 1 after it):
    # these models have the paper's stages, heads and widths, but smaller MLPs
    dim = heads[0] * dim_head
    return dict(image_size=224, patch_size=patch_size, num_classes=1000, dim=dim, depth=depth, heads=heads,
                dim_head=dim_head, mlp_dim=4 * dim)


CONFIGS: dict[str, dict[str, Any]] = {
    # the README's usage
    "readme": dict(image_size=224, patch_size=14, dim=256, num_classes=1000, depth=(3, 3, 3), heads=16,
                   mlp_dim=2048, dropout=0.1, emb_dropout=0.1),
    # the small training recipe (examples/configs.py); num_classes and channels come from the data.
    # 4 px patches with stride 2 give 7 x 7 tokens, pooled to 4 x 4
    "small": dict(image_size=16, patch_size=4, dim=32, depth=(2, 2), heads=(2, 4), dim_head=16, mlp_dim=128,
                  dropout=0.1, emb_dropout=0.1),
    "pit_ti": _paper(16, 32, (2, 6, 4), (2, 4, 8)),
    "pit_xs": _paper(16, 48, (2, 6, 4), (2, 4, 8)),
    "pit_s": _paper(16, 48, (2, 6, 4), (3, 6, 12)),
    "pit_b": _paper(14, 64, (3, 6, 4), (4, 8, 16)),
}
# fmt: on
