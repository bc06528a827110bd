import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from simple_vit_flax import CONFIGS, SimpleViT, from_vit_pytorch

from vit_layers_flax.testing import ContractSuite, ModelCase, load_reference
from vit_layers_flax.testing.readme import readme_python_blocks

README = Path(__file__).parents[1] / "README.md"

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    ModelCase(
        # the training recipe's configuration
        "small",
        dict(CONFIGS["small"], num_classes=10),
        (2, 16, 16, 3),
        bad_spatial=[(17, 16), (20, 16), (16, 12)],
    ),
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
    readme = README
    readme_shapes = {"output": (1, 1000), "embeddings": (2, 64), "maps": [(2, 4, 4, 64), (2, 4, 4, 64)]}


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


def test_readme_usage_is_the_readme_configuration():
    calls = [
        node
        for block in readme_python_blocks(README)
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SimpleViT"
    ]
    # the first call is the usage; the features example follows
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configuration_builds_at_its_input_size(name):
    model = SimpleViT(**{"num_classes": 10, **CONFIGS[name]})
    side = model.input_sizes().smallest
    images = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    assert jax.eval_shape(model.apply, shapes, images).shape == (1, model.num_classes)


def test_input_sizes_are_the_configured_size():
    model = SimpleViT(**SMALL)
    assert model.input_sizes().smallest == 32 and 32 in model.input_sizes() and 40 not in model.input_sizes()
    wide = SimpleViT(**{**SMALL, "image_size": (32, 48)}).input_sizes()
    assert wide.smallest_shape == (32, 48) and (32, 48) in wide and 32 not in wide


def test_position_embedding_is_a_constant_not_a_parameter():
    model = SimpleViT(**SMALL)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
    assert set(shapes["params"]) == {"to_patch_embedding", "transformer", "linear_head"}


@pytest.mark.parity
def test_position_embedding_matches_reference():
    from vit_layers_flax import posemb_sincos_2d

    reference = load_reference("simple_vit").posemb_sincos_2d(h=4, w=6, dim=64).numpy()
    np.testing.assert_allclose(posemb_sincos_2d(4, 6, 64), reference, rtol=1e-6, atol=1e-6)
