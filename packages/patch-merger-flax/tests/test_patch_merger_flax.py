import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from patch_merger_flax import CONFIGS, PatchMerger, ViT, from_vit_pytorch

from vit_layers_flax import ConversionError
from vit_layers_flax.testing import (
    PARITY_RTOL,
    ContractSuite,
    ModelCase,
    build_reference,
    random_variables,
    readme_python_blocks,
    relative_error,
)

SMALL = dict(
    image_size=32,
    patch_size=8,
    num_classes=10,
    dim=64,
    depth=2,
    heads=4,
    dim_head=16,
    mlp_dim=128,
    patch_merge_num_tokens=4,
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    ModelCase(
        "merge-first-layer-dropout",
        dict(SMALL, patch_merge_layer=1, dropout=0.1, emb_dropout=0.1),
        (2, 32, 32, 3),
        bad_spatial=[(33, 32), (40, 32), (32, 24)],
    ),
    ModelCase(
        "merge-last-layer-nonsquare-gray",
        dict(
            SMALL,
            image_size=(32, 48),
            patch_size=(8, 16),
            patch_merge_layer=2,
            channels=1,
            num_classes=7,
            patch_merge_num_tokens=3,
        ),
        (2, 32, 48, 1),
    ),
    ModelCase(
        # default patch_merge_layer = depth // 2 = 1 of 2; heads == 1 and dim_head == dim: no to_out
        "default-merge-layer-one-head-4ch",
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
            patch_merge_num_tokens=2,
        ),
        (2, 24, 24, 4),
    ),
]


class TestViT(ContractSuite):
    model_cls = ViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("vit_with_patch_merger", "ViT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {
        "output": (1, 1000),
        "merger_output": (4, 8, 1024),
        "embeddings": (2, 64),
        "maps": [(2, 4, 4, 64), (2, 4, 4, 64)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(patch_size=(8, 7)), "must be divisible by patch_size"),
        (dict(depth=0), "must be positive"),
        (dict(patch_merge_num_tokens=0), "patch_merge_num_tokens must be positive"),
        (dict(patch_merge_layer=0), "patch_merge_layer must be between 1 and depth=2"),
        (dict(patch_merge_layer=3), "patch_merge_layer must be between 1 and depth=2"),
        (dict(depth=1), r"received 0 \(the default depth // 2\)"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViT(**{**SMALL, **kwargs})


@pytest.mark.parametrize("merge_layer, depth", [(1, 3), (2, 3), (3, 3), (None, 3), (None, 4), (None, 5)])
def test_tokens_are_merged_after_patch_merge_layer(merge_layer, depth):
    model = ViT(**{**SMALL, "depth": depth, "dim": 32, "patch_merge_layer": merge_layer})
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)

    def intermediates(img):
        variables = model.init(jax.random.key(0), img)
        return model.apply(variables, img, capture_intermediates=True, mutable=["intermediates"])[1]

    captured = jax.eval_shape(intermediates, x)["intermediates"]["transformer"]
    after = model.merge_layer
    names = [f"layers_{i}" for i in range(after)] + [f"merged_layers_{j}" for j in range(depth - after)]
    assert set(captured) == {*names, "patch_merger", "norm", "__call__"}
    tokens = [captured[name]["__call__"][0].shape[1] for name in names]
    assert tokens == [16] * after + [4] * (depth - after)
    assert captured["patch_merger"]["__call__"][0].shape == (2, 4, 32)


def test_position_embedding_has_the_references_extra_row():
    model = ViT(**SMALL)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    assert shapes["params"]["embedding"] == {"pos_embedding": jax.ShapeDtypeStruct((16 + 1, 64), jnp.float32)}
    assert set(shapes["params"]) == {"to_patch_embedding", "embedding", "transformer", "mlp_head"}


def test_input_sizes_smallest_works():
    """This ViT is fixed-size: the contract suite checks that other sizes are refused. A
    non-square configuration has no ``InputSizes`` (one set of sides for both axes)."""
    model = ViT(**SMALL)
    side = model.input_sizes().smallest
    assert side == SMALL["image_size"] and side in model.input_sizes()
    out = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32),
    )
    assert out.shape == (1, SMALL["num_classes"])
    wide = ViT(**{**SMALL, "image_size": (32, 48), "patch_size": (8, 16)}).input_sizes()
    assert wide.smallest_shape == (32, 48) and (32, 48) in wide and 32 not in wide


# the standalone PatchMerger ------------------------------------------------------------

MERGER = dict(dim=64, num_tokens_out=5)


def _features(shape=(2, 37, 64)):
    return np.asarray(jax.random.normal(jax.random.key(3), shape, jnp.float32))


def test_patch_merger_shape_and_any_token_count():
    merger = PatchMerger(**MERGER)
    features = _features()
    variables = random_variables(merger, features)
    assert set(variables["params"]) == {"norm", "queries"}
    assert variables["params"]["queries"].shape == (5, 64)
    for tokens in (1, 37, 100):
        out = jax.jit(merger.apply)(variables, _features((2, tokens, 64)))
        assert out.shape == (2, 5, 64) and bool(jnp.isfinite(out).all())


def test_patch_merger_output_is_a_convex_combination_of_normalised_tokens():
    merger = PatchMerger(dim=8, num_tokens_out=3)
    features = _features((2, 1, 8))  # one token: every query returns it (normalised)
    variables = random_variables(merger, features)
    out = merger.apply(variables, features)
    norm = variables["params"]["norm"]
    mean, var = features.mean(-1, keepdims=True), features.var(-1, keepdims=True)
    normalised = (features - mean) / np.sqrt(var + 1e-5) * norm["scale"] + norm["bias"]
    np.testing.assert_allclose(out, np.repeat(normalised, 3, axis=1), rtol=1e-5, atol=1e-5)


def test_patch_merger_dtypes():
    features = _features()
    variables = random_variables(PatchMerger(**MERGER), features)
    out = jax.jit(PatchMerger(**MERGER, dtype=jnp.bfloat16).apply)(variables, features)
    assert out.dtype == jnp.bfloat16
    assert relative_error(out, PatchMerger(**MERGER).apply(variables, features)) < 0.1
    shapes = jax.eval_shape(PatchMerger(**MERGER, param_dtype=jnp.bfloat16).init, jax.random.key(0), features)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("shape", [(37, 64), (2, 37, 63), (2, 4, 4, 64)])
def test_patch_merger_rejects_malformed_features(shape):
    merger = PatchMerger(**MERGER)
    bad = jax.ShapeDtypeStruct(shape, jnp.float32)
    with pytest.raises(ValueError, match=r"expected features of shape \(batch, tokens, 64\)") as info:
        jax.eval_shape(merger.init, jax.random.key(0), bad)
    assert str(shape) in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(dim=0, num_tokens_out=4), dict(dim=8, num_tokens_out=0)])
def test_patch_merger_invalid_configuration(kwargs):
    with pytest.raises(ValueError, match="must be positive"):
        PatchMerger(**kwargs)


@pytest.mark.parity
def test_patch_merger_matches_reference():
    import torch

    reference = build_reference("vit_with_patch_merger", "PatchMerger", MERGER)
    merger = PatchMerger(**MERGER)
    variables = from_vit_pytorch(reference.state_dict(), merger)
    features = _features()
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.array(features))).numpy()
    ours = jax.jit(merger.apply)(variables, features)
    assert ours.shape == expected.shape == (2, 5, 64)
    assert relative_error(ours, expected) <= PARITY_RTOL


@pytest.mark.parity
def test_patch_merger_converter_rejects_mismatched_state_dict():
    good = {
        k: v.numpy()
        for k, v in build_reference("vit_with_patch_merger", "PatchMerger", MERGER).state_dict().items()
    }
    with pytest.raises(ConversionError, match="queries"):
        from_vit_pytorch({k: v for k, v in good.items() if k != "queries"}, PatchMerger(**MERGER))
    with pytest.raises(ConversionError, match="shape"):
        from_vit_pytorch(good, PatchMerger(dim=64, num_tokens_out=6))


# README ----------------------------------------------------------------------------------


def test_readme_usage_is_the_readme_configuration():
    usage = ast.parse(readme_python_blocks(Path(__file__).parents[1] / "README.md")[0])
    call = next(
        n for n in ast.walk(usage) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "ViT"
    )
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == CONFIGS["readme"]
