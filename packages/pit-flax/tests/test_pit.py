import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from pit_flax import CONFIGS, PiT, Pool, from_vit_pytorch

from vit_layers_flax.testing import ContractSuite, ModelCase, readme_python_blocks

SMALL = dict(
    image_size=32, patch_size=8, num_classes=10, dim=32, depth=(1, 1, 1), heads=2, dim_head=16, mlp_dim=64
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 224, 224, 3), readme_config=True),
    ModelCase(
        # 7 x 7 patches of 8 px, stride 4 -> pools to 4 x 4; widths 32, 64
        "two-stages-dropout",
        dict(SMALL, depth=(1, 1), dropout=0.1, emb_dropout=0.1),
        (2, 32, 32, 3),
        bad_spatial=[(33, 32), (32, 24), (24, 32), (24, 24)],  # non-square, and square of another size
    ),
    ModelCase(
        # 15 x 15 patches of 4 px, stride 2 -> 8 x 8 -> 4 x 4; widths 16, 32, 64. Stage 0 has
        # one head as wide as the stage, so (as in the reference) no attention output projection
        "three-stages-stage-heads-one-head-gray",
        dict(SMALL, patch_size=4, dim=16, heads=(1, 2, 4), channels=1, num_classes=7),
        (2, 32, 32, 1),
    ),
    ModelCase(
        # odd patch: 18 x 18 patches of 5 px, stride 2 (the last pixel row/column unused); no pool
        "one-stage-odd-patch-4ch",
        dict(
            image_size=40,
            patch_size=5,
            num_classes=5,
            dim=48,
            depth=(2,),
            heads=4,
            dim_head=16,
            mlp_dim=64,
            channels=4,
        ),
        (2, 40, 40, 4),
        bad_spatial=[(40, 45), (45, 45)],
    ),
]


class TestPiT(ContractSuite):
    model_cls = PiT
    convert = staticmethod(from_vit_pytorch)
    reference = ("pit", "PiT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {
        "output": (1, 1000),
        "embeddings": (2, 128),
        "maps": [(2, 7, 7, 32), (2, 4, 4, 64), (2, 2, 2, 128)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=(32, 32)), "must be ints"),
        (dict(patch_size=(8, 8)), "must be ints"),
        (dict(patch_size=1), "at least 2"),
        (dict(image_size=36), "must be divisible by patch_size"),
        (dict(depth=2), "depth must be a tuple"),
        (dict(depth=()), "depth must be a tuple"),
        (dict(heads=(2, 2)), "one entry per stage"),
        (dict(heads=(2, 0, 2)), "must be positive"),
        (dict(depth=(1, 0, 1)), "must be positive"),
        (dict(mlp_dim=0), "must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PiT(**{**SMALL, **kwargs})


def test_non_square_images_are_rejected_at_trace_time():
    model = PiT(**SMALL)
    variables = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 32, 32, 3\).*\(2, 32, 40, 3\)"):
        jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, 32, 40, 3), jnp.float32))


def test_parameters_follow_the_reference_layout():
    model = PiT(**{**SMALL, "patch_size": 4, "dim": 16, "depth": (2, 1, 1), "heads": (1, 2, 4)})
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))[
        "params"
    ]
    shapes = jax.tree.map(lambda p: p.shape, params)
    assert set(shapes) == {
        "to_patch_embedding",
        "embedding",
        *(f"stages_{i}" for i in range(3)),
        *(f"pools_{i}" for i in range(2)),
        "mlp_head",
    }
    assert shapes["to_patch_embedding"]["kernel"] == (3 * 4 * 4, 16)
    assert shapes["embedding"] == {"cls_token": (1, 16), "pos_embedding": (15 * 15 + 1, 16)}
    # stage transformers have no final LayerNorm; stage 0 (1 head of width 16) has no to_out
    assert set(shapes["stages_0"]) == {"layers_0", "layers_1"}
    assert set(shapes["stages_0"]["layers_0"]["attn"]) == {"norm", "to_qkv"}
    assert shapes["stages_1"]["layers_0"]["attn"]["to_out"]["kernel"] == (2 * 16, 32)
    assert shapes["stages_2"]["layers_0"]["ff"]["fc1"]["kernel"] == (64, 64)  # mlp_dim kept
    # pools: class-token Dense and depthwise (channel multiplier 2) + pointwise convolutions
    assert shapes["pools_0"] == {
        "cls_ff": {"kernel": (16, 32), "bias": (32,)},
        "depthwise": {"kernel": (3, 3, 1, 32), "bias": (32,)},
        "pointwise": {"kernel": (1, 1, 32, 32), "bias": (32,)},
    }
    assert shapes["mlp_head"]["fc"]["kernel"] == (64, 10)


@pytest.mark.parametrize("side, pooled", [(7, 4), (8, 4), (1, 1)])
def test_pool_halves_the_grid_rounding_up_and_doubles_the_width(side, pooled):
    tokens = jax.ShapeDtypeStruct((2, 1 + side * side, 8), jnp.float32)
    out = jax.eval_shape(lambda x: Pool(8).init_with_output(jax.random.key(0), x)[0], tokens)
    assert out.shape == (2, 1 + pooled * pooled, 16)


@pytest.mark.parametrize("name", ["pit_ti", "pit_xs", "pit_s", "pit_b"])
def test_paper_configurations_build(name):
    model = PiT(**CONFIGS[name])
    side = model.input_sizes().smallest
    assert side == 224
    images = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    widths = [stage.dim for stage in model.stages]
    assert shapes["mlp_head"]["fc"]["kernel"].shape == (widths[-1], 1000)
    assert widths == [CONFIGS[name]["dim"] * 2**i for i in range(3)]


def test_input_sizes_smallest_works():
    """PiT is fixed-size: the contract suite checks that other sizes are refused."""
    model = PiT(**SMALL)
    side = model.input_sizes().smallest
    assert side == SMALL["image_size"] and side in model.input_sizes()
    out = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32),
    )
    assert out.shape == (1, SMALL["num_classes"])


def test_readme_usage_is_the_readme_configuration():
    usage = ast.parse(readme_python_blocks(Path(__file__).parents[1] / "README.md")[0])
    call = next(
        n for n in ast.walk(usage) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "PiT"
    )
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == CONFIGS["readme"]
