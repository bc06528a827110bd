from pathlib import Path

import pytest
from vision_transformer_flax import ViT, from_vit_pytorch

from vit_layers_flax.testing import ContractSuite, ModelCase

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128)

CASES = [
    ModelCase(
        "seed",
        dict(
            image_size=256,
            patch_size=32,
            num_classes=1000,
            dim=1024,
            depth=6,
            heads=16,
            mlp_dim=2048,
            dropout=0.1,
            emb_dropout=0.1,
        ),
        (1, 256, 256, 3),
        seed_config=True,
    ),
    ModelCase(
        "cls-dropout",
        dict(SMALL, dropout=0.1, emb_dropout=0.1),
        (2, 32, 32, 3),
        bad_spatial=[(33, 32), (40, 32), (32, 24)],
    ),
    ModelCase(
        "mean-nonsquare-tuple-patch-gray",
        dict(SMALL, image_size=(32, 48), patch_size=(8, 16), pool="mean", channels=1, num_classes=7),
        (2, 32, 48, 1),
    ),
    ModelCase(
        "one-head-no-out-proj-4ch",
        dict(
            image_size=24,
            patch_size=6,
            num_classes=5,
            dim=32,
            depth=2,
            heads=1,
            dim_head=32,
            mlp_dim=64,
            channels=4,
        ),
        (3, 24, 24, 4),
    ),
    ModelCase(
        "headless-tokens",
        dict(SMALL, num_classes=0, heads=2, dim_head=8),
        (2, 32, 32, 3),
        output_shape=(2, 17, 64),
    ),
]


class TestViT(ContractSuite):
    model_cls = ViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("vit", "ViT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {"output": (1, 1000)}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pool="max"), "pool must be 'cls' or 'mean'"),
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(patch_size=(8, 7)), "must be divisible by patch_size"),
        (dict(depth=0), "must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViT(**{**SMALL, **kwargs})
