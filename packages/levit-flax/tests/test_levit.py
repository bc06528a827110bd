import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from levit_flax import (
    CONFIGS,
    ConvNorm,
    ConvNormAttention,
    LeViT,
    StageLayout,
    attention_bias_indices,
    from_vit_pytorch,
)

from vit_layers_flax.testing import (
    BatchNormContractSuite,
    ModelCase,
    load_reference,
    random_variables,
    readme_python_blocks,
)

SMALL = dict(
    image_size=32,
    num_classes=10,
    dim=(32, 48),
    depth=1,
    heads=2,
    mlp_mult=2,
    stages=2,
    dim_key=8,
    dim_value=16,
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 224, 224, 3), readme_config=True),
    ModelCase(
        # the first small case also runs eagerly and with remat: the cheapest one
        "one-stage-dropout",
        dict(
            image_size=32,
            num_classes=6,
            dim=32,
            depth=1,
            heads=4,
            mlp_mult=2,
            stages=1,
            dim_key=16,
            dim_value=8,
            dropout=0.1,
        ),
        (2, 32, 32, 3),
        bad_spatial=[(33, 32), (16, 16), (32, 48)],
    ),
    ModelCase(
        # an odd map shrinks to ceil(3 / 2) = 2; depth (1,) and heads (2,) are padded to two
        # stages; the shrinking block keeps mlp_mult=2 whatever the model's
        "two-stages-distill",
        dict(SMALL, image_size=48, depth=(1,), heads=(2,), mlp_mult=3, num_distill_classes=5),
        (2, 48, 48, 3),
        output_shape=((2, 10), (2, 5)),
    ),
    ModelCase(
        # maps 5 -> 3 -> 2 (a 1x1 map would leave its attention weights constant, so q, k and
        # the bias without gradient); dim (32, 48) is padded to (32, 48, 48) as the reference
        # does, so the second shrinking block keeps the width and still has no attention residual
        "three-stages",
        dict(SMALL, image_size=80, stages=3, dim_value=8),
        (2, 80, 80, 3),
    ),
]


class TestLeViT(BatchNormContractSuite):
    model_cls = LeViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("levit", "LeViT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {
        "output": (1, 1000),
        "logits": (1, 1000),
        "embeddings": (2, 48),
        "maps": [(2, 4, 4, 32), (2, 2, 2, 48)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=40), "must be a positive multiple of 16"),
        (dict(image_size=(32, 32)), "must be a positive multiple of 16"),
        (dict(stages=0), "stages must be a positive int"),
        (dict(dim=(32, 48, 64)), "at most stages=2 values"),
        (dict(heads=()), "at most stages=2 values"),
        (dict(depth=(1, 0)), "depth must be positive ints"),
        (dict(mlp_mult=0), "must be positive"),
        (dict(num_classes=-1), "num_classes must be a non-negative int"),
        (dict(num_distill_classes=0), "num_distill_classes must be None or positive"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LeViT(**{**SMALL, **kwargs})


def test_pooled_features_feed_both_heads():
    """With a distillation head, ``pre_logits`` is what ``mlp_head`` and ``distill_head``
    both read (the contract skips its head check for two outputs)."""
    model = LeViT(**dict(SMALL, num_classes=3, num_distill_classes=2))
    images = np.asarray(jax.random.normal(jax.random.key(0), (2, 32, 32, 3)))
    variables = random_variables(model, images)
    run = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, pre_logits=True)))
    with jax.default_matmul_precision("highest"):
        (logits, distill), pooled = run(variables, images)
    params = variables["params"]
    assert pooled.shape == (2, model.num_features) == (2, 48)
    for out, head in ((logits, "mlp_head"), (distill, "distill_head")):
        expected = pooled @ params[head]["kernel"] + params[head]["bias"]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_stage_layout_follows_the_reference():
    """Per-stage values are padded with the last one; every stage but the last ends with a
    downsampling block to the next stage's width, which halves the map, rounding up."""
    model = LeViT(image_size=80, num_classes=3, dim=(32, 48), depth=(2,), heads=3, mlp_mult=4, dropout=0.2)
    assert model.stage_layout == (
        StageLayout(dim=32, fmap_size=5, depth=2, heads=3, dim_out=48),
        StageLayout(dim=48, fmap_size=3, depth=2, heads=3, dim_out=48),
        StageLayout(dim=48, fmap_size=2, depth=2, heads=3, dim_out=None),
    )


def test_parameter_tree_names_stages_blocks_and_downsampling():
    """``stages_{i}`` hold their blocks ``layers_{j}`` and (but the last) the downsampling block
    ``downsample``: twice the heads, ``mlp_mult`` 2, the next stage's width."""
    model = LeViT(**dict(SMALL, depth=(2, 1), mlp_mult=3))
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    params = params["params"]
    assert set(params) == {*(f"conv_embedding_{i}" for i in range(4)), "stages_0", "stages_1", "mlp_head"}
    assert set(params["stages_0"]) == {"layers_0", "layers_1", "downsample"}
    assert set(params["stages_1"]) == {"layers_0"}
    downsample = params["stages_0"]["downsample"]
    assert downsample["attn"]["pos_bias"]["embedding"].shape == (4, 2 * 2)  # 2x2 map, twice the heads
    assert downsample["attn"]["to_out"]["conv"]["kernel"].shape == (1, 1, 2 * 2 * 16, 48)
    assert downsample["ff"]["fc1"]["kernel"].shape == (1, 1, 48, 2 * 48)  # mlp_mult 2 whatever the model's
    assert params["stages_0"]["layers_0"]["ff"]["fc1"]["kernel"].shape == (1, 1, 32, 3 * 32)


def test_input_sizes_are_the_configured_size():
    model = LeViT(**SMALL)
    assert model.input_sizes().smallest == 32 and 48 not in model.input_sizes()
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    assert jax.eval_shape(model.apply, params, jnp.zeros((1, 32, 32, 3))).shape == (1, 10)


@pytest.mark.parametrize("name", [k for k in CONFIGS if k.startswith("levit_")])
def test_paper_configurations_build(name):
    model = LeViT(**CONFIGS[name])
    side = model.input_sizes().smallest
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    )
    assert jax.eval_shape(
        model.apply, shapes, jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    ).shape == (
        1,
        1000,
    )


def test_small_recipe_builds():
    model = LeViT(**CONFIGS["small"], num_classes=10)
    side = model.input_sizes().smallest
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    )
    assert set(shapes["params"]) >= {"stages_0", "stages_1"}


def test_attention_bias_indices_read_the_absolute_offset():
    for size, downsample in ((3, False), (5, True), (4, True)):
        indices = attention_bias_indices(size, downsample)
        step = 2 if downsample else 1
        queries = [(i, j) for i in range(0, size, step) for j in range(0, size, step)]
        keys = [(i, j) for i in range(size) for j in range(size)]
        expected = [[abs(qi - ki) * size + abs(qj - kj) for ki, kj in keys] for qi, qj in queries]
        np.testing.assert_array_equal(indices, np.array(expected))
        assert indices.dtype == np.int32


def test_attention_bias_is_gathered_from_the_table():
    """The bias of each (query, key) pair and head is the table row that
    :func:`attention_bias_indices` names, gathered in one ``take``."""
    attn = ConvNormAttention(8, 3, heads=2, dim_key=4, dim_value=4, downsample=True)
    x = jnp.zeros((1, 3, 3, 8))
    variables = random_variables(attn, x)
    capture = jax.jit(lambda v: attn.apply(v, x, capture_intermediates=True, mutable=["intermediates"])[1])
    gathered = np.asarray(capture(variables)["intermediates"]["pos_bias"]["__call__"][0])
    table = np.asarray(variables["params"]["pos_bias"]["embedding"])
    np.testing.assert_array_equal(gathered, table[attention_bias_indices(3, True)])
    assert gathered.shape == (4, 9, 2)


def test_attention_output_norm_starts_at_zero():
    """As the reference, the attention's output BatchNorm scale starts at zero, so a fresh
    attention branch outputs zero (an 'rbg' key: its initialisers compile faster than threefry's)."""
    to_out = ConvNorm(4, use_bias=True, zero_init_norm=True)
    x = np.random.default_rng(0).standard_normal((2, 2, 2, 8), dtype=np.float32)
    variables = to_out.init(jax.random.key(1, impl="rbg"), x)
    np.testing.assert_array_equal(variables["params"]["norm"]["scale"], np.zeros(4))
    np.testing.assert_array_equal(to_out.apply(variables, x), np.zeros((2, 2, 2, 4)))


@pytest.mark.parity
def test_attention_bias_indices_match_reference():
    reference = load_reference("levit").Attention
    for size, downsample in ((4, False), (5, True), (4, True)):
        attn = reference(8, fmap_size=size, heads=2, dim_key=4, dim_value=4, downsample=downsample)
        np.testing.assert_array_equal(attention_bias_indices(size, downsample), attn.pos_indices.numpy())


def test_readme_usage_builds_the_readme_configuration():
    """The README's usage constructs the model with exactly ``CONFIGS["readme"]``."""
    code = readme_python_blocks(Path(__file__).parents[1] / "README.md")[0]
    calls = [
        n
        for n in ast.walk(ast.parse(code))
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LeViT"
    ]
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]
