import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from scalablevit_flax import CONFIGS, ScalableViT, from_vit_pytorch

from vit_layers_flax import ClassifierHead, InputSizes
from vit_layers_flax.testing import (
    ContractSuite,
    ModelCase,
    build_reference,
    random_variables,
    readme_python_blocks,
    relative_error,
)

README = Path(__file__).parents[1] / "README.md"

# Small cases: few blocks (a block costs seconds of XLA compilation per compiled function,
# and a dropout site more), widths 16-32, 32-48 px. Every attention has at least two keys per
# query (with a single key the queries would get no gradient). Stage maps: ceil(side / 4),
# then ceil(/ 2) per stage. The first case has two blocks in its stage (the PEG in the first
# only), so that scan=True has a stack to scan (the second block); the README configuration's
# parity and the README's weight-loading block check deeper stages.
SMALL = dict(
    num_classes=10,
    dim=16,
    depth=(2, 0),
    heads=1,
    reduction_factor=(2, 1),
    window_size=(4, None),
    ssa_dim_key=16,
    ssa_dim_value=16,
    iwsa_dim_key=16,
    iwsa_dim_value=16,
    ff_expansion_factor=2,
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    ModelCase(
        # 32 px -> stage 1 8x8: SSA keys 4x4 (reduction 2), IWSA in 2x2 windows of 4x4, then the
        # stage norm and downsampling -> stage 2 4x4 without blocks (the last: no norm)
        "window-4-reduction-2",
        SMALL,
        (2, 32, 32, 3),
        # 33 -> a 9-row map (reduction 2), 40 -> a 10-column map (window 4)
        bad_spatial=[(33, 32), (32, 40)],
    ),
    ModelCase(
        # three stages on a non-square gray image: 8x12 (no blocks) -> 4x6: two heads, SSA keys 2x3
        # (reduction 2), IWSA in 2x3 windows of 2x2; key and value widths differ (the explicit
        # float32-softmax path) in both attentions -> 2x3 (no blocks)
        "three-stages-key-value-widths-gray",
        dict(
            num_classes=7,
            channels=1,
            dim=16,
            depth=(0, 1, 0),
            heads=2,
            ssa_dim_key=8,
            ssa_dim_value=12,
            iwsa_dim_key=12,
            iwsa_dim_value=8,
            reduction_factor=2,
            window_size=2,
            ff_expansion_factor=2,
        ),
        (2, 32, 48, 1),
        # 36 -> stage 2 5x6 (reduction 2, window 2); 40 -> stage 2 5x5 (stage 1 has no blocks)
        bad_spatial=[(36, 48), (40, 40)],
    ),
    ModelCase(
        # one stage (the last: no norm, no downsampling) on an odd map: 36 px -> 9x9, SSA keys 3x3
        # (reduction 3), IWSA in 3x3 windows of 3x3; default key / value widths (32), two heads,
        # 4 channels; dropout everywhere
        "one-stage-odd-map-window-3-dropout-4ch",
        dict(
            num_classes=5,
            channels=4,
            dim=16,
            depth=(1,),
            heads=2,
            reduction_factor=3,
            window_size=3,
            ff_expansion_factor=2,
            dropout=0.1,
        ),
        (2, 36, 36, 4),
        # 37 -> a 10-row map
    ),
]


class TestScalableViT(ContractSuite):
    model_cls = ScalableViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("scalable_vit", "ScalableViT")
    cases = CASES
    readme = README
    readme_shapes = {
        "output": (1, 1000),
        "embeddings": (2, 32),
        "maps": [(2, 16, 12, 16), (2, 8, 6, 32)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=2), "depth must be a tuple"),
        (dict(depth=()), "depth must be a tuple"),
        (dict(depth=(1, -1)), "depth entries must be non-negative"),
        (dict(num_classes=-1), "num_classes must be non-negative"),
        (dict(dim=0), "dim must be positive"),
        (dict(channels=0), "channels must be positive"),
        (dict(ff_expansion_factor=0), "ff_expansion_factor must be positive"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(heads=(1, 2, 4)), r"heads must be one value or a tuple of 2"),
        (dict(reduction_factor=(2, 0)), "reduction_factor must be positive"),
        (dict(window_size=(0, None)), "window_size must be positive or None"),
        (dict(ssa_dim_key=(16,)), "ssa_dim_key must be one value or a tuple of 2"),
        (dict(iwsa_dim_value=-1), "iwsa_dim_value must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScalableViT(**{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "kwargs, shape, message",
    [
        # 48x32 -> stage 1 12x8 (no constraint), stage 2 6x4: 6 rows do not split into 4x4 windows
        (
            dict(reduction_factor=1, window_size=(None, 4)),
            (1, 48, 32, 3),
            r"stage 2 a 6x4 .* window \(window_size\) is 4x4",
        ),
        (
            dict(reduction_factor=(1, 4), window_size=None),
            (1, 48, 32, 3),
            r"stage 2 a 6x4 .* \(reduction_factor\) is 4x4",
        ),
        # a window larger than the map (the reference asserts too)
        (dict(window_size=(16, None)), (1, 32, 32, 3), r"stage 1 a 8x8 .* is 16x16"),
    ],
)
def test_image_size_breaking_a_stage_names_it(kwargs, shape, message):
    model = ScalableViT(**{**SMALL, "depth": (1, 1), **kwargs})
    with pytest.raises(ValueError, match=message) as info:
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    assert str(shape) in str(info.value)


def test_stages_without_blocks_have_no_size_constraint():
    model = ScalableViT(**{**SMALL, "depth": (0, 1), "window_size": (64, None), "reduction_factor": (64, 1)})
    out = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 20, 28, 3), jnp.float32))
    assert out["params"]["stages_0"].keys() == {"norm", "downsample"}


def test_feature_map_sizes():
    model = ScalableViT(
        **{**SMALL, "depth": (1, 1, 1, 1), "heads": 1, "reduction_factor": 1, "window_size": None}
    )
    assert model.feature_map_sizes(256, 256) == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert model.feature_map_sizes(37, 9) == [(10, 3), (5, 2), (3, 1), (2, 1)]


def test_parameter_tree_mirrors_the_reference():
    model = ScalableViT(
        num_classes=5,
        channels=4,
        dim=16,
        depth=(2, 1),
        heads=(1, 2),
        reduction_factor=(3, 1),
        window_size=(3, None),
    )
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 36, 36, 4), jnp.float32))[
        "params"
    ]
    assert set(params) == {"to_patches", "stages_0", "stages_1", "mlp_head"}
    assert params["to_patches"]["kernel"].shape == (7, 7, 4, 16)
    first = params["stages_0"]
    assert set(first) == {"layers_0", "layers_1", "norm", "downsample"}
    assert first["downsample"]["kernel"].shape == (3, 3, 16, 32)
    assert first["norm"]["scale"].shape == (16,)
    # the PEG sits in the first block of a stage only
    assert set(first["layers_0"]) == {"ssa", "ff1", "peg", "ff2", "iwsa"}
    assert set(first["layers_1"]) == {"ssa", "ff1", "ff2", "iwsa"}
    block = first["layers_0"]
    assert block["peg"]["proj"]["kernel"].shape == (3, 3, 1, 16)  # depthwise
    assert block["ssa"]["to_k"]["kernel"].shape == (3, 3, 16, 32)  # reduction 3, one head of 32
    assert block["ssa"]["to_q"]["kernel"].shape == (16, 32)
    assert set(block["iwsa"]) == {"norm", "local_interactive_module", "to_q", "to_k", "to_v", "to_out"}
    assert block["iwsa"]["local_interactive_module"]["kernel"].shape == (3, 3, 32, 32)  # a full conv
    assert set(block["ff1"]) == {"norm", "fc1", "fc2"} and block["ff1"]["fc1"]["kernel"].shape == (16, 64)
    # the last stage has neither the final norm nor a downsampling
    assert set(params["stages_1"]) == {"layers_0"}
    assert params["mlp_head"]["fc"]["kernel"].shape == (32, 5)


def test_features_are_what_the_head_pools():
    """The last feature map, averaged, normalised and classified, gives the logits."""
    model = ScalableViT(**{**SMALL, "depth": (0, 1)})
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = random_variables(model, images)

    @jax.jit
    def both(variables, images):
        features = model.apply(variables, images, return_features=True)
        head = ClassifierHead(10).apply(
            {"params": variables["params"]["mlp_head"]}, features[-1].mean(axis=(1, 2))
        )
        return model.apply(variables, images), head

    logits, pooled = both(variables, images)
    assert relative_error(pooled, logits) < 1e-6


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # the empty Linear
def test_converter_builds_a_headless_model():
    """``num_classes=0``: the reference's empty ``Linear(dim, 0)`` is read and dropped (its
    LayerNorm kept), the model returns the reference's normalised pooled features; a
    state_dict with a classifier is refused."""
    import numpy as np
    import torch

    from vit_layers_flax import ConversionError

    config = dict(SMALL, num_classes=0, depth=(0, 1))
    torch_model = build_reference("scalable_vit", "ScalableViT", config)
    model = ScalableViT(**config)
    variables = from_vit_pytorch(torch_model.state_dict(), model)
    assert set(variables["params"]["mlp_head"]) == {"norm"}
    images = np.random.default_rng(3).standard_normal((2, 32, 32, 3), dtype=np.float32)
    with torch.no_grad():
        x = torch_model.to_patches(torch.from_numpy(images).permute(0, 3, 1, 2))
        for transformer, downsample in torch_model.layers:
            x = transformer(x) if downsample is None else downsample(transformer(x))
        expected = torch_model.mlp_head[:2](x)
    assert relative_error(jax.jit(model.apply)(variables, images), expected.numpy()) < 1e-4
    with pytest.raises(
        ConversionError, match=r"expected no classifier \(num_classes=0\), received 10 classes"
    ):
        from_vit_pytorch(
            build_reference("scalable_vit", "ScalableViT", dict(config, num_classes=10)).state_dict(), model
        )


def test_scan_keeps_the_peg_block_and_stacks_the_rest():
    """scan=True: each stage's first block (with the PEG) stays ``layers_0``; the others are
    one ``layers`` subtree with a leading axis of ``depth - 1``, and a one-block stage has none."""
    model = ScalableViT(**{**SMALL, "depth": (3, 1), "window_size": (4, None), "scan": True})
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))[
        "params"
    ]
    first = params["stages_0"]
    assert set(first) == {"layers_0", "layers", "norm", "downsample"}
    assert "peg" in first["layers_0"] and "peg" not in first["layers"]
    assert first["layers"]["ff1"]["fc1"]["kernel"].shape == (2, 16, 32)
    assert set(params["stages_1"]) == {"layers_0"}


def _accepts(model, side):
    """Whether ``model`` takes ``side x side`` images (the stage checks run at trace time)."""
    try:
        model._check_stage_sizes(jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "kwargs, sizes, next_rejected",
    [
        (SMALL, InputSizes(16, 16), 17),  # stage 1 (side / 4, rounded up): 4x4 windows
        (CASES[2].kwargs, InputSizes(16, 16), 17),  # stage 2 (side / 8): reduction 2 and window 2
        (CASES[3].kwargs, InputSizes(12, 12), 13),  # stage 1: reduction 3 and window 3
        (dict(SMALL, reduction_factor=1, window_size=None), InputSizes(1, 1), None),  # no tiles
        (CONFIGS["readme"], InputSizes(256, 256), 257),  # stage 1: windows of 64
        (dict(CONFIGS["small"], num_classes=10), InputSizes(16, 16), 17),
    ],
)
def test_input_sizes(kwargs, sizes, next_rejected):
    """Every multiple of the step works, from the smallest on; the next size up that is not
    one is refused (sides a little below a multiple round up to its stage maps)."""
    model = ScalableViT(**kwargs)
    assert model.input_sizes() == sizes
    smallest, channels = sizes.smallest, model.channels
    images = jax.ShapeDtypeStruct((2, smallest, smallest, channels), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    assert jax.eval_shape(model.apply, variables, images).shape == (2, model.num_classes)
    assert all(_accepts(model, smallest * k) for k in range(1, 5))
    if next_rejected is None:
        assert all(_accepts(model, side) for side in range(1, 100))
        return
    with pytest.raises(ValueError, match="ScalableViT: images of shape"):
        jax.eval_shape(
            model.apply, variables, jax.ShapeDtypeStruct((2, next_rejected, smallest, channels), jnp.float32)
        )


@pytest.mark.parametrize("name", [name for name in CONFIGS if name.startswith("scalablevit_")])
def test_paper_configurations_build(name):
    """The paper's variants, at the paper's 224 x 224 (shapes only)."""
    model = ScalableViT(**CONFIGS[name])
    assert 224 in model.input_sizes()
    params = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    )["params"]
    assert params["mlp_head"]["fc"]["kernel"].shape == (CONFIGS[name]["dim"] * 8, 1000)


def test_readme_usage_is_the_readme_config():
    calls = [
        node
        for block in readme_python_blocks(README)
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ScalableViT"
    ]
    # the first call is the usage; the features example follows
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]
