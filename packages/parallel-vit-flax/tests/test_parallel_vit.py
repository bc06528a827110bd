import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parallel_vit_flax import CONFIGS, ParallelTransformerBlock, ViT, from_vit_pytorch

from vit_layers_flax import Attention, FeedForward
from vit_layers_flax.testing import ContractSuite, ModelCase
from vit_layers_flax.testing.readme import readme_python_blocks

README = Path(__file__).parents[1] / "README.md"

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    ModelCase(
        # the training recipe's configuration: two branches, with dropout
        "small",
        dict(CONFIGS["small"], num_classes=10),
        (2, 16, 16, 3),
        bad_spatial=[(17, 16), (20, 16), (16, 12)],
    ),
    ModelCase(
        # heads == 1 and dim_head == dim: the attention has no output projection
        "one-branch-mean-one-head",
        dict(
            image_size=24,
            patch_size=6,
            num_classes=5,
            dim=32,
            depth=2,
            heads=1,
            dim_head=32,
            mlp_dim=64,
            num_parallel_branches=1,
            pool="mean",
        ),
        (2, 24, 24, 3),
    ),
    ModelCase(
        "three-branches-nonsquare-gray",
        dict(
            SMALL,
            image_size=(32, 48),
            patch_size=(8, 16),
            depth=1,
            num_parallel_branches=3,
            channels=1,
            num_classes=7,
        ),
        (2, 32, 48, 1),
    ),
]


class TestParallelViT(ContractSuite):
    model_cls = ViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("parallel_vit", "ViT")
    cases = CASES
    readme = README
    readme_shapes = {"output": (1, 1000), "embeddings": (2, 64), "maps": [(2, 4, 4, 64), (2, 4, 4, 64)]}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pool="max"), "pool must be 'cls' or 'mean'"),
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(patch_size=(8, 7)), "must be divisible by patch_size"),
        (dict(num_parallel_branches=0), "num_parallel_branches must be at least 1"),
        (dict(depth=0), "must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViT(**{**SMALL, **kwargs})


def test_readme_usage_is_the_readme_configuration():
    calls = [
        node
        for block in readme_python_blocks(README)
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ViT"
    ]
    # the first call is the usage; the features example follows
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configuration_builds_at_its_input_size(name):
    model = ViT(**{"num_classes": 10, **CONFIGS[name]})
    side = model.input_sizes().smallest
    images = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    assert jax.eval_shape(model.apply, shapes, images).shape == (1, model.num_classes)


def test_input_sizes_are_the_configured_size():
    model = ViT(**SMALL)
    assert model.input_sizes().smallest == 32 and 32 in model.input_sizes() and 40 not in model.input_sizes()
    wide = ViT(**{**SMALL, "image_size": (32, 48)}).input_sizes()
    assert wide.smallest_shape == (32, 48) and (32, 48) in wide and 32 not in wide


def test_parameter_tree_mirrors_the_reference():
    model = ViT(**{**SMALL, "depth": 1, "num_parallel_branches": 3})
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    params = shapes["params"]
    assert set(params) == {"to_patch_embedding", "embedding", "transformer", "mlp_head"}
    assert set(params["to_patch_embedding"]) == {"kernel", "bias"}  # a single Linear, no LayerNorms
    assert set(params["transformer"]) == {"layers_0"}  # no final norm
    assert set(params["transformer"]["layers_0"]) == {"attn_0", "attn_1", "attn_2", "ff_0", "ff_1", "ff_2"}
    embedding = params["embedding"]
    assert embedding["pos_embedding"].shape == (17, 64) and embedding["cls_token"].shape == (1, 64)


def test_block_sums_attention_branches_then_feed_forward_branches():
    dim, heads, dim_head, mlp_dim = 16, 2, 8, 32
    x = jax.random.normal(jax.random.key(0), (2, 5, dim))
    block = ParallelTransformerBlock(dim, heads, dim_head, mlp_dim, num_parallel_branches=2)
    params = block.init(jax.random.key(1), x)["params"]
    out = block.apply({"params": params}, x)

    def attn(j, y):
        return Attention(dim, heads=heads, dim_head=dim_head).apply({"params": params[f"attn_{j}"]}, y)

    def ff(j, y):
        return FeedForward(dim, mlp_dim).apply({"params": params[f"ff_{j}"]}, y)

    y = x + attn(0, x) + attn(1, x)
    expected = y + ff(0, y) + ff(1, y)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
