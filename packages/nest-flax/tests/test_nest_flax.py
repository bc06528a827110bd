import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nest_flax import CONFIGS, Aggregate, NesT, from_vit_pytorch

from vit_layers_flax import merge_windows, partition_windows
from vit_layers_flax.testing import (
    PARITY_RTOL,
    ContractSuite,
    ModelCase,
    load_reference,
    random_variables,
    readme_python_blocks,
    relative_error,
)

SMALL = dict(image_size=32, patch_size=4, num_classes=10, dim=32, heads=2, num_hierarchies=2, block_repeats=1)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 224, 224, 3), readme_config=True),
    ModelCase(
        # 8x8 patch map, 2x2 grid of 4x4 blocks -> aggregate to 4x4 -> one block
        "two-levels-dropout",
        dict(SMALL, mlp_mult=2, dropout=0.1),
        (2, 32, 32, 3),
        # not a multiple of the patch, not of patch * grid (8), blocks beyond the 16 positions
        bad_spatial=[(33, 32), (32, 36), (64, 64)],
    ),
    ModelCase(
        # 16x16 patch map, 4x4 grid of 4x4 blocks; widths 16/32/64 with 1/2/4 heads of 16
        # (to_out kept for the single head, as in the reference). Small cases run one block
        # per level: the README's (2, 2, 8) checks that each level gets its own depth.
        "three-levels-one-head-gray",
        dict(
            image_size=32,
            patch_size=2,
            num_classes=7,
            dim=16,
            heads=1,
            num_hierarchies=3,
            block_repeats=(1, 1, 1),
            channels=1,
        ),
        (2, 32, 32, 1),
    ),
    ModelCase(
        # built for 64x64 (4x4 blocks, seq_len 16), fed 32x48: 2x3 blocks using pos_emb[:6];
        # dim 20 with 3 heads of 6 (inner width 18 != dim)
        "smaller-nonsquare-input-uneven-heads",
        dict(
            image_size=64,
            patch_size=8,
            num_classes=10,
            dim=20,
            heads=3,
            num_hierarchies=2,
            block_repeats=1,
            mlp_mult=1,
        ),
        (2, 32, 48, 3),
        bad_spatial=[(33, 48), (32, 40), (80, 64)],
    ),
]


class TestNesT(ContractSuite):
    model_cls = NesT
    convert = staticmethod(from_vit_pytorch)
    reference = ("nest", "NesT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {
        "output": (1, 1000),
        "n_params_flax": (),
        "embeddings": (2, 64),
        "maps": [(2, 8, 8, 32), (2, 4, 4, 64)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(image_size=(32, 32)), "must be ints"),
        (dict(image_size=20), r"5 x 5 patch map .* cannot be split into a 2 x 2 block grid"),
        (dict(num_hierarchies=5), r"8 x 8 patch map .* cannot be split into a 16 x 16 block grid"),
        (dict(num_hierarchies=0), "num_hierarchies must be >= 1"),
        (dict(block_repeats=(1, 1, 1)), "expected 2 values"),
        (dict(block_repeats=(1, -1)), "block_repeats must be >= 0"),
        (dict(heads=64), "must be at least heads"),
        (dict(dim=0), "must be positive"),
        (dict(num_classes=-1), "num_classes must be >= 0"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NesT(**{**SMALL, **kwargs})


def test_blocks_are_the_reference_s_grid():
    """A level cuts its map into a ``grid x grid`` grid of blocks ordered ``(b b1 b2)``, as the
    reference's ``rearrange(x, 'b c (b1 h) (b2 w) -> (b b1 b2) c h w')``: the shared window
    partition with windows of ``(H / grid, W / grid)``."""
    x = jnp.arange(2 * 8 * 12 * 3).reshape(2, 8, 12, 3)
    blocks = partition_windows(x, (4, 6))  # a 2x2 grid of 4x6 blocks
    assert blocks.shape == (2 * 4, 4 * 6, 3)
    # block (batch 1, row 0, column 1) is the top-right 4x6 window, tokens row-major
    np.testing.assert_array_equal(blocks[1 * 4 + 0 * 2 + 1], x[1, :4, 6:].reshape(24, 3))
    np.testing.assert_array_equal(merge_windows(blocks, (4, 6), (8, 12)), x)
    np.testing.assert_array_equal(partition_windows(x, (8, 12)), x.reshape(2, 96, 3))


def _shapes(**kwargs):
    model = NesT(**{**SMALL, **kwargs})
    img = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.channels), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), img)["params"]


def test_parameter_structure():
    params = _shapes(heads=1, block_repeats=(2, 1))
    assert set(params) == {"to_patch_embedding", "stages_0", "stages_1", "norm", "head"}
    assert set(params["stages_1"]) == {"pos_emb", "transformer"}  # the top level has no aggregation
    bottom = params["stages_0"]
    assert bottom["pos_emb"].shape == (16,)  # one scalar per position
    assert set(bottom["transformer"]) == {"layers_0", "layers_1"}
    attn = bottom["transformer"]["layers_0"]["attn"]
    assert attn["to_qkv"]["kernel"].shape == (32, 3 * 32) and attn["to_out"]["kernel"].shape == (32, 32)
    assert bottom["aggregate"]["conv"]["kernel"].shape == (3, 3, 32, 64)
    assert bottom["aggregate"]["norm"]["scale"].shape == (64,)
    top = params["stages_1"]["transformer"]["layers_0"]
    assert top["attn"]["to_qkv"]["kernel"].shape == (64, 3 * 64)  # 2 heads of 32
    assert top["ff"]["fc1"]["kernel"].shape == (64, 4 * 64)
    assert params["norm"]["scale"].shape == (64,) and params["head"]["kernel"].shape == (64, 10)


def test_dim_head_is_unused():
    same = jax.tree.map(lambda a, b: a.shape == b.shape, _shapes(dim_head=8), _shapes(dim_head=64))
    assert all(jax.tree.leaves(same))


def test_accepts_the_sizes_the_reference_takes():
    model = NesT(**CASES[3].kwargs)  # seq_len 16, block grid 2x2 of 16 px
    variables = random_variables(model, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    for shape in [(1, 64, 64, 3), (1, 32, 48, 3), (1, 128, 32, 3), (1, 16, 16, 3)]:
        out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert out.shape == (1, 10)
    with pytest.raises(ValueError, match=r"received shape \(1, 64, 80, 3\).*configured \(64, 64\)"):
        jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 64, 80, 3), jnp.float32))


def test_input_sizes():
    """The smallest side (one patch per block) works; the next side up that is not a multiple
    of ``patch_size * grid`` raises."""
    model = NesT(**SMALL)  # 4 px patches, a 2x2 grid at the bottom
    sizes = model.input_sizes()
    assert (sizes.smallest, sizes.step) == (8, 8)
    variables = random_variables(model, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    assert jax.eval_shape(model.apply, variables, jnp.zeros((1, 8, 8, 3))).shape == (1, 10)
    assert 9 not in sizes
    with pytest.raises(ValueError, match=r"received shape \(1, 9, 9, 3\)"):
        jax.eval_shape(model.apply, variables, jnp.zeros((1, 9, 9, 3)))


@pytest.mark.parametrize("name", [k for k in CONFIGS if k.startswith("nest_")])
def test_paper_configurations_build(name):
    model = NesT(**CONFIGS[name])
    images = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    assert jax.eval_shape(model.apply, shapes, images).shape == (1, 1000)


def test_small_recipe_builds():
    model = NesT(**CONFIGS["small"], num_classes=10)
    images = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), jnp.float32)
    assert jax.eval_shape(
        model.apply, jax.eval_shape(model.init, jax.random.key(0), images), images
    ).shape == (1, 10)


@pytest.mark.parity
def test_aggregate_matches_reference():
    """Odd sizes check the ceil of the pooling; -inf padding shows where a window's
    values are all negative at the border."""
    import torch

    torch.manual_seed(0)
    reference = load_reference("nest").Aggregate(4, 6)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    sd = {k: v.numpy() for k, v in reference.state_dict().items()}
    variables = {
        "params": {
            "conv": {"kernel": sd["0.weight"].transpose(2, 3, 1, 0), "bias": sd["0.bias"]},
            "norm": {"scale": sd["1.g"].reshape(-1), "bias": sd["1.b"].reshape(-1)},
        }
    }
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 7, 4)))
    ours = jax.jit(Aggregate(6).apply)(variables, x)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert ours.shape == (2, 3, 4, 6)
    assert relative_error(ours, theirs) <= PARITY_RTOL


def test_readme_usage_builds_the_readme_configuration():
    """The README's usage constructs the model with exactly ``CONFIGS["readme"]``."""
    code = readme_python_blocks(Path(__file__).parents[1] / "README.md")[0]
    calls = [
        n
        for n in ast.walk(ast.parse(code))
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "NesT"
    ]
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]
