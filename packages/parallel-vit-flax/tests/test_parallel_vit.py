from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parallel_vit_flax import ParallelTransformerBlock, ViT, from_vit_pytorch

from vit_layers_flax import Attention, FeedForward
from vit_layers_flax.testing import ContractSuite, ModelCase

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128)

CASES = [
    ModelCase(
        "seed",
        dict(
            image_size=256,
            patch_size=16,
            num_classes=1000,
            dim=1024,
            depth=6,
            heads=8,
            mlp_dim=2048,
            num_parallel_branches=2,
            dropout=0.1,
            emb_dropout=0.1,
        ),
        (1, 256, 256, 3),
        seed_config=True,
    ),
    ModelCase(
        "two-branches-cls-dropout",
        dict(SMALL, num_parallel_branches=2, dropout=0.1, emb_dropout=0.1),
        (2, 32, 32, 3),
        bad_spatial=[(33, 32), (40, 32), (32, 24)],
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
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {"output": (1, 1000)}


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


def test_parameter_tree_mirrors_the_reference():
    model = ViT(**{**SMALL, "depth": 1, "num_parallel_branches": 3})
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    params = shapes["params"]
    assert set(params) == {"to_patch_embedding", "pos_embedding", "cls_token", "transformer", "mlp_head"}
    assert set(params["to_patch_embedding"]) == {"kernel", "bias"}  # a single Linear, no LayerNorms
    assert set(params["transformer"]) == {"layers_0"}  # no final norm
    assert set(params["transformer"]["layers_0"]) == {"attn_0", "attn_1", "attn_2", "ff_0", "ff_1", "ff_2"}
    assert params["pos_embedding"].shape == (1, 17, 64) and params["cls_token"].shape == (1, 1, 64)


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
