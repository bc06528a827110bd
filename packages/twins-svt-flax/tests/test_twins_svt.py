import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from twins_svt_flax import CONFIGS, TwinsSVT, from_vit_pytorch

from vit_layers_flax import InputSizes
from vit_layers_flax.testing import ContractSuite, ModelCase, random_variables, readme_python_blocks

README = Path(__file__).parents[1] / "README.md"

# Four small stages of one block each (stages 1-3: local attention, feed-forward, global
# attention, feed-forward; stage 4 without the local pair): every block costs seconds of XLA
# compilation per compiled function, and the README configuration checks deeper stages. Heads are
# fixed by the reference (8 of 64). Every attention has at least two keys: with a single key the
# queries would get no gradient.
# 32 px: 16 (4x4 windows, 4x4 keys) -> 8 (4x4 windows, 2x2 keys) -> 4 (2x2, 2x2) -> 2 (2x2 keys)
SMALL = dict(
    num_classes=10,
    s1_emb_dim=16,
    s1_patch_size=2,
    s1_local_patch_size=4,
    s1_global_k=4,
    s1_depth=0,
    s2_emb_dim=32,
    s2_patch_size=2,
    s2_local_patch_size=4,
    s2_global_k=4,
    s2_depth=0,
    s3_emb_dim=48,
    s3_patch_size=2,
    s3_local_patch_size=2,
    s3_global_k=2,
    s3_depth=0,
    s4_emb_dim=64,
    s4_patch_size=2,
    s4_global_k=1,
    s4_depth=0,
)

# 48 x 64 px, global strides that do not divide the maps (floored, as torch's convolution does):
# 12x16 (4x4 windows; stride 5: 2x3 keys) -> 6x8 (2x2 windows; stride 3: 2x2 keys)
# -> 6x8 (patch 1; 2x2 windows; stride 2: 3x4 keys) -> 3x4 (stride 2: 1x2 keys)
FLOORED = dict(
    num_classes=7,
    s1_emb_dim=16,
    s1_patch_size=4,
    s1_local_patch_size=4,
    s1_global_k=5,
    s1_depth=0,
    s2_emb_dim=24,
    s2_patch_size=2,
    s2_local_patch_size=2,
    s2_global_k=3,
    s2_depth=0,
    s3_emb_dim=32,
    s3_patch_size=1,
    s3_local_patch_size=2,
    s3_global_k=2,
    s3_depth=0,
    s4_emb_dim=40,
    s4_patch_size=2,
    s4_global_k=2,
    s4_depth=0,
    peg_kernel_size=5,
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 224, 224, 3), readme_config=True),
    ModelCase(
        # the first small case also runs the eager and remat checks: the cheapest one
        "dropout",
        dict(SMALL, dropout=0.1),
        (2, 32, 32, 3),
        # stage 1 patch (33), stage 2 local window (40 -> 20 -> 10), stage 1 local window (36 -> 18)
        bad_spatial=[(33, 32), (40, 32), (32, 36)],
    ),
    ModelCase(
        "nonsquare-floored-global-peg5",
        FLOORED,
        (2, 48, 64, 3),
        # stage 1 patch (49), stage 1 local window (60 -> 15), stage 1 map 4x16 < global stride 5
        bad_spatial=[(49, 64), (48, 60), (16, 64)],
    ),
    ModelCase(
        # 64 px: 16 (2x2 windows of 8x8; 2x2 keys) -> 8 (one 8x8 window; 2x2 keys) -> 4 (one 4x4
        # window; 2x2 keys) -> 2 (2x2 keys); 1x1 PEG; a second block in stage 4 (global attention
        # only; the README configuration has more blocks in every stage)
        "large-windows-64px-peg1-second-block-s4",
        dict(
            SMALL,
            s1_emb_dim=32,
            s1_patch_size=4,
            s1_local_patch_size=8,
            s1_global_k=8,
            s2_local_patch_size=8,
            s3_emb_dim=64,
            s3_local_patch_size=4,
            s4_depth=1,
            peg_kernel_size=1,
        ),
        (2, 64, 64, 3),
        bad_spatial=[(64, 65), (48, 64)],  # stage 1 patch; stage 1 local window (48 -> 12)
    ),
]


class TestTwinsSVT(ContractSuite):
    model_cls = TwinsSVT
    convert = staticmethod(from_vit_pytorch)
    reference = ("twins_svt", "TwinsSVT")
    cases = CASES
    readme = README
    readme_shapes = {
        "output": (1, 1000),
        "n_params_flax": (),
        "embeddings": (2, 64),
        "maps": [(2, 16, 16, 16), (2, 8, 8, 32), (2, 4, 4, 48), (2, 2, 2, 64)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=-1), "num_classes must be non-negative"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(peg_kernel_size=4), "peg_kernel_size must be positive and odd"),
        (dict(peg_kernel_size=0), "peg_kernel_size must be positive and odd"),
        (dict(s1_emb_dim=0), "s1_emb_dim=0"),
        (dict(s2_patch_size=0), "s2_patch_size=0"),
        (dict(s3_local_patch_size=0), "s3_local_patch_size=0"),
        (dict(s4_global_k=0), "s4_global_k=0"),
        (dict(s3_depth=-1), "s3_depth=-1"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwinsSVT(**{**SMALL, **kwargs})


def test_last_stage_window_is_unused():
    """Stage 4 has no local attention in the reference: its window size is accepted and ignored."""
    TwinsSVT(**{**SMALL, "s4_local_patch_size": 0})


def _init_shapes(model, shape):
    """``model.init`` traced on ``shape`` (the size checks run before any layer is built)."""
    return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize(
    "config, shape, message",
    [
        (
            SMALL,
            (1, 40, 32, 3),
            r"\(1, 40, 32, 3\) give stage 2 a 10x8 feature map, but its local window is 4x4",
        ),
        (
            dict(SMALL, s4_patch_size=4),
            (1, 48, 32, 3),
            r"\(1, 48, 32, 3\) give stage 4 a 6x4 feature map, but its patch size is 4x4",
        ),
        (
            FLOORED,
            (1, 16, 64, 3),
            r"\(1, 16, 64, 3\) give stage 1 a 4x16 feature map, but its global sub-sampling stride is 5x5: "
            r"expected a feature map of at least 5x5",
        ),
        (
            dict(SMALL, s4_global_k=3),
            (1, 32, 32, 3),
            r"stage 4 a 2x2 feature map, but its global sub-sampling stride is 3x3",
        ),
    ],
)
def test_a_size_breaking_a_later_stage_names_the_stage(config, shape, message):
    with pytest.raises(ValueError, match=message):
        _init_shapes(TwinsSVT(**config), shape)


@pytest.mark.parametrize(
    "config, sizes",
    [
        (CONFIGS["readme"], InputSizes(224, 224)),  # 7x7 windows / strides on 56, 28, 14 and 7
        (SMALL, InputSizes(16, 16)),  # stage 2's 4x4 windows on a map of side / 4
        (FLOORED, InputSizes(32, 16)),  # multiples of 16; stage 4 (side / 16) at least its stride 2
    ],
)
def test_input_sizes(config, sizes):
    """The smallest side works and the sides between accepted ones are refused."""
    model = TwinsSVT(**config)
    assert model.input_sizes() == sizes
    smallest = sizes.smallest
    variables = random_variables(model, jax.ShapeDtypeStruct((1, smallest, smallest, 3), jnp.float32))
    out = jax.eval_shape(
        model.apply, variables, jax.ShapeDtypeStruct((2, smallest, smallest, 3), jnp.float32)
    )
    assert out.shape == (2, config["num_classes"])
    for side in [
        *range(max(1, smallest - sizes.step), smallest),
        *range(smallest + 1, smallest + sizes.step),
    ]:
        with pytest.raises(ValueError, match="TwinsSVT: images of shape"):
            _init_shapes(model, (1, side, smallest, 3))


def test_any_accepted_size_takes_the_same_variables():
    model = TwinsSVT(**FLOORED)
    variables = _init_shapes(model, (1, 32, 32, 3))
    # 80 x 176 floors stage 1's 20 x 44 map to 4 x 8 keys
    assert jax.tree.map(lambda v: v.shape, _init_shapes(model, (1, 80, 176, 3))) == jax.tree.map(
        lambda v: v.shape, variables
    )
    out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, 80, 176, 3), jnp.float32))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", [name for name in CONFIGS if name.startswith("twins_svt_")])
def test_paper_configurations_build(name):
    """The paper's variants, at the paper's 224 x 224 (shapes only)."""
    model = TwinsSVT(**CONFIGS[name])
    assert 224 in model.input_sizes()
    params = _init_shapes(model, (1, 224, 224, 3))["params"]
    assert params["to_logits"]["kernel"].shape == (CONFIGS[name]["s4_emb_dim"], 1000)


def test_parameter_tree_mirrors_the_reference():
    model = TwinsSVT(**dict(SMALL, s2_depth=2))
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))[
        "params"
    ]
    assert set(params) == {"stages_0", "stages_1", "stages_2", "stages_3", "to_logits"}
    assert set(params["stages_0"]) == {"patch_embedding", "first_transformer", "peg"}  # depth 0
    stage = params["stages_1"]
    assert set(stage) == {"patch_embedding", "first_transformer", "peg", "transformer"}
    assert set(stage["transformer"]) == {"layers_0", "layers_1"}
    embedding = stage["patch_embedding"]
    assert embedding["patch_norm"]["scale"].shape == (2 * 2 * 16,)  # (p1 p2 c) of the previous stage
    assert embedding["proj"]["kernel"].shape == (64, 32)
    block = stage["transformer"]["layers_0"]
    assert set(block) == {"local_attn", "ff1", "global_attn", "ff2"}
    assert block["local_attn"]["to_q"]["kernel"].shape == (32, 8 * 64)  # 8 heads of 64, fixed
    assert block["local_attn"]["to_kv"]["kernel"].shape == (32, 2 * 8 * 64)
    assert block["global_attn"]["to_kv"]["kernel"].shape == (4, 4, 32, 2 * 8 * 64)  # stride-4 conv
    assert block["global_attn"]["to_out"]["kernel"].shape == (8 * 64, 32)
    assert block["ff1"]["fc1"]["kernel"].shape == (32, 4 * 32)
    assert stage["peg"]["proj"]["kernel"].shape == (3, 3, 1, 32)  # depthwise
    last = params["stages_3"]["first_transformer"]["layers_0"]
    assert set(last) == {"global_attn", "ff2"}  # no local attention in the last stage


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # the empty Linear
def test_converter_builds_a_headless_model():
    """``num_classes=0``: the reference's empty ``Linear(dim, 0)`` is read and dropped, the model
    returns the reference's pooled features; a state_dict with a classifier is refused."""
    import numpy as np
    import torch

    from vit_layers_flax import ConversionError
    from vit_layers_flax.testing import build_reference, relative_error

    config = dict(SMALL, num_classes=0)
    torch_model = build_reference("twins_svt", "TwinsSVT", config)
    model = TwinsSVT(**config)
    variables = from_vit_pytorch(torch_model.state_dict(), model)
    assert "to_logits" not in variables["params"]
    images = np.random.default_rng(3).standard_normal((2, 32, 32, 3), dtype=np.float32)
    with torch.no_grad():
        expected = torch_model.layers[:-1](torch.from_numpy(images).permute(0, 3, 1, 2))
    assert relative_error(jax.jit(model.apply)(variables, images), expected.numpy()) < 1e-4
    with pytest.raises(
        ConversionError, match=r"expected no classifier \(num_classes=0\), received 10 classes"
    ):
        from_vit_pytorch(build_reference("twins_svt", "TwinsSVT", SMALL).state_dict(), model)


def test_readme_usage_is_the_readme_config():
    calls = [
        node
        for block in readme_python_blocks(README)
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TwinsSVT"
    ]
    # the first call is the usage; the features example follows
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]
