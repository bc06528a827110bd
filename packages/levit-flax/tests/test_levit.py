from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from levit_flax import Attention, ConvNorm, LeViT, attention_bias_indices, from_vit_pytorch

from vit_layers_flax.testing import BatchNormContractSuite, ModelCase, load_reference, random_variables

SEED = dict(
    image_size=224,
    num_classes=1000,
    stages=3,
    dim=(256, 384, 512),
    depth=4,
    heads=(4, 6, 8),
    mlp_mult=2,
    dropout=0.1,
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
    ModelCase("seed", SEED, (1, 224, 224, 3), seed_config=True),
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
    readme_shapes = {"output": (1, 1000), "logits": (1, 1000)}


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
        (dict(num_distill_classes=0), "num_distill_classes must be None or positive"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LeViT(**{**SMALL, **kwargs})


def test_backbone_layout_follows_the_reference():
    """Per-stage values are padded with the last one; a shrinking block (one block, twice the
    heads, mlp_mult 2, no dropout) follows every stage but the last and halves the map, rounding up."""
    model = LeViT(image_size=80, num_classes=3, dim=(32, 48), depth=(2,), heads=3, mlp_mult=4, dropout=0.2)
    layout = [
        (s.dim, s.dim_out, s.fmap_size, s.depth, s.heads, s.mlp_mult, s.dropout, s.downsample)
        for s in model.backbone_stages
    ]
    assert layout == [
        (32, 32, 5, 2, 3, 4, 0.2, False),
        (32, 48, 5, 1, 6, 2, 0.0, True),
        (48, 48, 3, 2, 3, 4, 0.2, False),
        (48, 48, 3, 1, 6, 2, 0.0, True),
        (48, 48, 2, 2, 3, 4, 0.2, False),
    ]


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
    attn = Attention(8, 3, heads=2, dim_key=4, dim_value=4, downsample=True)
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
