from pathlib import Path

import numpy as np
import pytest
from simple_vit_flax import SimpleViT, from_vit_pytorch

from vit_layers_flax.testing import ContractSuite, ModelCase, load_reference

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128)

CASES = [
    ModelCase(
        "seed",
        dict(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048),
        (1, 256, 256, 3),
        seed_config=True,
    ),
    ModelCase("small", SMALL, (2, 32, 32, 3), bad_spatial=[(33, 32), (40, 32), (32, 24)]),
    ModelCase(
        "nonsquare-tuple-patch-gray",
        dict(SMALL, image_size=(32, 48), patch_size=(8, 16), channels=1, num_classes=7),
        (2, 32, 48, 1),
    ),
    ModelCase(
        # heads == 1 and dim_head == dim: unlike ViT, SimpleViT keeps its output projection
        "one-head-5ch",
        dict(
            image_size=24,
            patch_size=6,
            num_classes=5,
            dim=32,
            depth=2,
            heads=1,
            dim_head=32,
            mlp_dim=64,
            channels=5,
        ),
        (3, 24, 24, 5),
    ),
]


class TestSimpleViT(ContractSuite):
    model_cls = SimpleViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("simple_vit", "SimpleViT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {"output": (1, 1000)}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=30), "multiple of 4"),
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(heads=0), "must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimpleViT(**{**SMALL, **kwargs})


def test_position_embedding_is_a_constant_not_a_parameter():
    import jax

    model = SimpleViT(**SMALL)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
    assert set(shapes["params"]) == {"to_patch_embedding", "transformer", "linear_head"}


@pytest.mark.parity
def test_position_embedding_matches_reference():
    from vit_layers_flax import posemb_sincos_2d

    reference = load_reference("simple_vit").posemb_sincos_2d(h=4, w=6, dim=64).numpy()
    np.testing.assert_allclose(posemb_sincos_2d(4, 6, 64), reference, rtol=1e-6, atol=1e-6)
