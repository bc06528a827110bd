import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cvt_flax import CONFIGS, CvT, from_vit_pytorch

from vit_layers_flax.testing import BatchNormContractSuite, ModelCase, readme_python_blocks

README = Path(__file__).parents[1] / "README.md"

# Three small stages: 32 px -> 16 -> 8 -> 4 (stride 2 each). Every case has all three stages
# but only one or two transformer blocks in all (a stage of depth 0 is its embedding only):
# each block costs seconds of XLA compilation per compiled function. Each attention has at
# least two keys (with a single key the queries would not matter and get no gradient).
SMALL = dict(
    num_classes=10,
    s1_emb_dim=16,
    s1_emb_stride=2,
    s1_depth=0,
    s2_emb_dim=32,
    s2_heads=2,
    s2_depth=0,
    s3_emb_dim=48,
    s3_heads=2,
    s3_depth=0,
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    # fully convolutional: no spatial size is rejected. Stage 2: one block with dropout, keys
    # and values from a stride-3 projection (8 x 8 queries, 3 x 3 keys).
    ModelCase(
        "dropout-kv-stride-3",
        dict(SMALL, s2_depth=1, s2_kv_proj_stride=3, dropout=0.1),
        (2, 32, 32, 3),
        bad_spatial=[],
    ),
    ModelCase(
        # odd, non-square image (45 x 33 -> 23 x 17 -> 12 x 9 -> 6 x 5): one block in stage 1, whose
        # 5 x 5 stride-2 key / value projection gives 12 x 9 keys; 5 x 5 embedding kernel
        "odd-nonsquare-gray",
        dict(SMALL, channels=1, num_classes=7, s1_emb_kernel=5, s1_depth=1, s1_proj_kernel=5, s1_mlp_mult=2),
        (2, 45, 33, 1),
        bad_spatial=[],
    ),
    ModelCase(
        # even embedding kernel (32 -> 17 -> 9 -> 5); stage 2: two blocks of four heads, keys and
        # values at full resolution; 4 channels
        "deeper-heads-4ch",
        dict(
            SMALL,
            channels=4,
            s1_emb_kernel=4,
            s2_depth=2,
            s2_heads=4,
            s2_kv_proj_stride=1,
            s2_mlp_mult=2,
        ),
        (2, 32, 32, 4),
        bad_spatial=[],
    ),
]


class TestCvT(BatchNormContractSuite):
    model_cls = CvT
    convert = staticmethod(from_vit_pytorch)
    reference = ("cvt", "CvT")
    cases = CASES
    readme = README
    readme_shapes = {
        "output": (1, 1000),
        "embeddings": (2, 64),
        "maps": [(2, 16, 16, 16), (2, 8, 8, 32), (2, 4, 4, 64)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=-1), "num_classes must be non-negative"),
        (dict(channels=0), "channels must be positive"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(s2_heads=0), "s2_heads=0"),
        (dict(s1_emb_stride=0), "s1_emb_stride=0"),
        (dict(s3_depth=-1), "s3_depth=-1"),
        (dict(s3_kv_proj_stride=0), "s3_kv_proj_stride=0"),
        (dict(s2_proj_kernel=4), "s2_proj_kernel must be odd"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CvT(**{**SMALL, **kwargs})


def test_any_image_size_takes_the_same_variables():
    """Fully convolutional: parameters do not depend on the image size, and any size runs, from
    the smallest of ``input_sizes()`` on (there is no size it rejects)."""
    model = CvT(**dict(SMALL, s1_depth=1, s2_depth=1, s3_depth=1))
    variables = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    other = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 97, 131, 3), jnp.float32))
    assert jax.tree.map(lambda v: v.shape, variables) == jax.tree.map(lambda v: v.shape, other)
    sizes = model.input_sizes()
    assert sizes.smallest == 1 and all(side in sizes for side in range(1, 300))
    for size in [(1, 1), (7, 100), (64, 48), (97, 131)]:
        out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))
        assert out.shape == (2, 10), size


def test_parameter_tree_mirrors_the_reference():
    model = CvT(**dict(SMALL, s2_depth=1))
    variables = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    params, stats = variables["params"], variables["batch_stats"]
    assert set(stats) == {"stages_1"}  # stages of depth 0 have no BatchNorm
    assert set(params) == {"stages_0", "stages_1", "stages_2", "to_logits"}
    stage = params["stages_1"]
    assert set(stage) == {"conv", "norm", "transformer"}
    assert stage["conv"]["kernel"].shape == (3, 3, 16, 32) and stage["norm"]["scale"].shape == (32,)
    attn = stage["transformer"]["layers_0"]["attn"]
    assert set(attn) == {"norm", "to_q", "to_kv", "to_out"}
    assert set(attn["to_kv"]) == {"depthwise", "bn", "pointwise"}
    assert attn["to_q"]["depthwise"]["kernel"].shape == (3, 3, 1, 32)  # depthwise, no bias
    assert attn["to_kv"]["pointwise"]["kernel"].shape == (32, 2 * 2 * 64)  # heads of 64 channels
    assert set(stage["transformer"]["layers_0"]["ff"]) == {"norm", "fc1", "fc2"}
    bn_stats = stats["stages_1"]["transformer"]["layers_0"]["attn"]["to_kv"]["bn"]
    assert set(bn_stats) == {"mean", "var"} and bn_stats["var"].dtype == jnp.float32


@pytest.mark.parity
def test_converter_handles_stages_without_blocks():
    """``s*_depth=0`` leaves a stage with its embedding only (and no BatchNorm statistics)."""
    from vit_layers_flax.testing import build_reference, reference_outputs, relative_error

    config = dict(
        num_classes=5, s1_emb_dim=16, s1_depth=0, s2_emb_dim=16, s2_depth=0, s3_emb_dim=16, s3_depth=0
    )
    torch_model = build_reference("cvt", "CvT", config)
    model = CvT(**config)
    variables = from_vit_pytorch(torch_model.state_dict(), model)
    assert set(variables) == {"params"}
    images = np.random.default_rng(3).standard_normal((2, 24, 20, 3), dtype=np.float32)
    assert (
        relative_error(jax.jit(model.apply)(variables, images), reference_outputs(torch_model, images)) < 1e-4
    )


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # the empty Linear
def test_converter_builds_a_headless_model():
    """``num_classes=0``: the reference's empty ``Linear(dim, 0)`` is read and dropped, the model
    returns the reference's pooled features; a state_dict with a classifier is refused."""
    import torch

    from vit_layers_flax import ConversionError
    from vit_layers_flax.testing import build_reference, relative_error

    config = dict(SMALL, num_classes=0)
    torch_model = build_reference("cvt", "CvT", config)
    model = CvT(**config)
    variables = from_vit_pytorch(torch_model.state_dict(), model)
    assert "to_logits" not in variables["params"]
    images = np.random.default_rng(3).standard_normal((2, 24, 20, 3), dtype=np.float32)
    with torch.no_grad():
        expected = torch_model.to_logits[:2](torch_model.layers(torch.from_numpy(images).permute(0, 3, 1, 2)))
    assert relative_error(jax.jit(model.apply)(variables, images), expected.numpy()) < 1e-4
    with pytest.raises(
        ConversionError, match=r"expected no classifier \(num_classes=0\), received 10 classes"
    ):
        from_vit_pytorch(build_reference("cvt", "CvT", SMALL).state_dict(), model)


@pytest.mark.parametrize("name", [name for name in CONFIGS if name not in ("readme", "small")])
def test_paper_configurations_build(name):
    """The paper's variants, at the paper's 224 x 224 (shapes only)."""
    model = CvT(**CONFIGS[name])
    assert 224 in model.input_sizes()
    variables = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    )
    assert set(variables["params"]) == {"stages_0", "stages_1", "stages_2", "to_logits"}


def test_small_recipe_builds():
    model = CvT(num_classes=10, **CONFIGS["small"])
    out = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32),
    )
    assert out.shape == (2, 10)


def test_readme_usage_is_the_readme_config():
    calls = [
        node
        for block in readme_python_blocks(README)
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CvT"
    ]
    # the first call is the usage; the features example follows
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]
