import ast
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from vit_small_datasets_flax import CONFIGS, LSA, SPT, ViT, from_vit_pytorch
from vit_small_datasets_flax.spt import shifted_stack

from vit_layers_flax import StateDict
from vit_layers_flax.testing import (
    ContractSuite,
    ModelCase,
    build_reference,
    random_variables,
    relative_error,
)
from vit_layers_flax.testing.readme import readme_python_blocks

README = Path(__file__).parents[1] / "README.md"
REFERENCE = "vit_for_small_dataset"
SMALL = dict(image_size=16, patch_size=4, num_classes=10, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    ModelCase(
        # the training recipe's configuration, with its dropout
        "small",
        dict(CONFIGS["small"], num_classes=10),
        (2, 16, 16, 3),
        bad_spatial=[(17, 16), (20, 16), (16, 12)],
    ),
    ModelCase(
        # pool='mean' averages over all tokens, the class token included (as the reference)
        "mean-nonsquare-gray",
        dict(SMALL, image_size=(16, 24), depth=1, pool="mean", channels=1, num_classes=7),
        (2, 16, 24, 1),
    ),
    ModelCase(
        # heads == 1 and dim_head == dim: LSA keeps its output projection (unlike ViT's Attention)
        "one-head-4ch",
        dict(
            image_size=24,
            patch_size=6,
            num_classes=5,
            dim=32,
            depth=1,
            heads=1,
            dim_head=32,
            mlp_dim=64,
            channels=4,
        ),
        (2, 24, 24, 4),
    ),
]

SPT_CASES = [
    # the README's standalone ``SPT(dim=1024, patch_size=16)`` on its (4, 256, 256, 3) images
    ModelCase(
        "readme",
        dict(dim=1024, patch_size=16),
        (4, 256, 256, 3),
        readme_config=True,
        output_shape=(4, 256, 1024),
    ),
    ModelCase(
        "nonsquare-2ch",
        dict(dim=32, patch_size=4, channels=2),
        (2, 16, 24, 2),
        output_shape=(2, 24, 32),
        bad_spatial=[(17, 24), (16, 26)],
    ),
]


class TestViT(ContractSuite):
    model_cls = ViT
    convert = staticmethod(from_vit_pytorch)
    reference = (REFERENCE, "ViT")
    cases = CASES
    readme = README
    readme_shapes = {
        "output": (4, 1000),
        "spt_output": (4, 256, 1024),
        "embeddings": (2, 64),
        "maps": [(2, 4, 4, 64), (2, 4, 4, 64)],
    }


class TestSPT(ContractSuite):
    model_cls = SPT
    convert = staticmethod(from_vit_pytorch)
    reference = (REFERENCE, "SPT")
    cases = SPT_CASES


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pool="max"), "pool must be 'cls' or 'mean'"),
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(image_size=(16, 18)), "must be divisible by patch_size"),
        (dict(depth=0), "must be positive"),
        (dict(dim_head=0), "must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViT(**{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "kwargs", [dict(dim=0, patch_size=4), dict(dim=8, patch_size=0), dict(dim=8, patch_size=4, channels=0)]
)
def test_spt_invalid_configuration(kwargs):
    with pytest.raises(ValueError, match="SPT: sizes must be positive"):
        SPT(**kwargs)


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
    assert model.input_sizes().smallest == 16 and 16 in model.input_sizes() and 20 not in model.input_sizes()
    wide = ViT(**{**SMALL, "image_size": (16, 24)}).input_sizes()
    assert wide.smallest_shape == (16, 24) and (16, 24) in wide and 16 not in wide


def test_spt_input_sizes_are_the_multiples_of_the_patch_size():
    spt = SPT(dim=8, patch_size=4)
    sizes = spt.input_sizes()
    assert (sizes.minimum, sizes.step) == (4, 4)
    variables = random_variables(spt, jax.ShapeDtypeStruct((1, 4, 4, 3), jnp.float32))
    smallest = jax.ShapeDtypeStruct((1, sizes.smallest, sizes.smallest, 3), jnp.float32)
    assert jax.eval_shape(spt.apply, variables, smallest).shape == (1, 1, 8)
    side = next(s for s in range(sizes.smallest + 1, 100) if s not in sizes)
    with pytest.raises(ValueError, match="not divisible"):
        jax.eval_shape(spt.apply, variables, jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32))
    wide = SPT(dim=8, patch_size=(2, 4)).input_sizes()
    assert wide.smallest_shape == (2, 4) and (4, 8) in wide and (4, 6) not in wide


def test_spt_accepts_any_multiple_of_the_patch_size_and_tuple_patches():
    spt = SPT(dim=8, patch_size=(2, 4), channels=1)
    shapes = jax.eval_shape(spt.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4, 8, 1), jnp.float32))
    variables = random_variables(spt, jax.ShapeDtypeStruct((1, 4, 8, 1), jnp.float32))
    assert shapes["params"]["patch_norm"]["scale"].shape == (2 * 4 * 5,)  # (p1 p2 c) with 5 stacked copies
    out = jax.eval_shape(spt.apply, variables, jax.ShapeDtypeStruct((3, 6, 12, 1), jnp.float32))
    assert out.shape == (3, 3 * 3, 8)


def test_shifted_stack_order_and_zero_border():
    """Channels are [image, right, left, down, up] (the reference's torch.cat order)."""
    x = jnp.arange(1.0, 13.0).reshape(1, 3, 4, 1)
    s = np.asarray(shifted_stack(x))[0]
    img = np.asarray(x)[0, :, :, 0]
    np.testing.assert_array_equal(s[..., 0], img)
    np.testing.assert_array_equal(s[:, 1:, 1], img[:, :-1])  # moved right
    np.testing.assert_array_equal(s[:, :-1, 2], img[:, 1:])  # moved left
    np.testing.assert_array_equal(s[1:, :, 3], img[:-1])  # moved down
    np.testing.assert_array_equal(s[:-1, :, 4], img[1:])  # moved up
    assert not s[:, 0, 1].any() and not s[:, -1, 2].any() and not s[0, :, 3].any() and not s[-1, :, 4].any()


@pytest.mark.parity
def test_shifted_stack_matches_reference_padding():
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    shifts = ((1, -1, 0, 0), (-1, 1, 0, 0), (0, 0, 1, -1), (0, 0, -1, 1))
    expected = torch.cat((t, *(F.pad(t, s) for s in shifts)), dim=1).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(shifted_stack(jnp.asarray(x))), expected)


LSA_KWARGS = dict(dim=32, heads=2, dim_head=16)


def _lsa_variables(tokens: int = 2):
    lsa = LSA(**LSA_KWARGS)
    return lsa, random_variables(lsa, jax.ShapeDtypeStruct((1, tokens, 32), jnp.float32))


def test_lsa_temperature_starts_at_log_inverse_sqrt_dim_head():
    lsa = LSA(**LSA_KWARGS)
    variables = jax.jit(lsa.init)(jax.random.key(0), jnp.zeros((1, 3, 32)))
    assert variables["params"]["temperature"].shape == ()
    np.testing.assert_allclose(variables["params"]["temperature"], math.log(16**-0.5), rtol=1e-6)


def test_lsa_token_never_attends_to_itself():
    """With two tokens each attends only to the other, so its output ignores its own value."""
    lsa, variables = _lsa_variables()
    x = jax.random.normal(jax.random.key(0), (2, 2, 32))
    changed = x.at[:, 0].set(jax.random.normal(jax.random.key(1), (2, 32)))
    apply = jax.jit(lsa.apply)
    out, out_changed = apply(variables, x), apply(variables, changed)
    np.testing.assert_allclose(out[:, 0], out_changed[:, 0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[:, 1], out_changed[:, 1])


@pytest.mark.parity
@pytest.mark.parametrize("tokens", [1, 5])
def test_lsa_matches_reference(tokens):
    """The masked diagonal, learned temperature and the one-token edge case (all masked)."""
    reference = build_reference(REFERENCE, "LSA", LSA_KWARGS)
    sd = StateDict(reference.state_dict())
    params = {
        "norm": sd.layer_norm("norm"),
        "to_qkv": sd.linear("to_qkv", bias=False),
        "temperature": sd["temperature"],
        "to_out": sd.linear("to_out.0"),
    }
    assert not sd.unused()
    x = np.random.default_rng(tokens).standard_normal((2, tokens, 32)).astype(np.float32)
    import torch

    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    ours = jax.jit(LSA(**LSA_KWARGS).apply)({"params": jax.tree.map(jnp.asarray, params)}, x)
    assert relative_error(ours, expected) <= 1e-5
