import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from regionvit_flax import (
    CONFIGS,
    RegionViT,
    from_vit_pytorch,
    local_rel_pos_indices,
    merge_region_windows,
    partition_region_windows,
    region_patches,
)

from vit_layers_flax.testing import ContractSuite, ModelCase, readme_python_blocks

# Four stages always (as in the reference). With window_size 2 and the stride-4 local tokenizer a
# 32 px image gives local maps 8 -> 4 -> 2 -> 1 over regional grids 4 -> 2 -> 1 -> 1. One layer per
# stage but two in the last: the classifier reads the regional tokens only, so the last stage's
# position bias (which acts on local queries) reaches the logits only through a second layer.
SMALL = dict(dim=(16, 32, 48, 64), depth=(1, 1, 1, 2), window_size=2, num_classes=10)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 224, 224, 3), readme_config=True),
    ModelCase(
        # local_patch_size 2: regional patches of 2 * 4 = 8 px, but the local tokenizer keeps
        # stride 4, so the windows are 2x2 and use part of the 7x7 (window_size 4) bias table
        "dropout-local-patch-2",
        dict(SMALL, window_size=4, local_patch_size=2, attn_dropout=0.1, ff_dropout=0.1),
        (2, 32, 32, 3),
        # not a multiple of the 8 px regional patch; 40 px: 10 local over 5 regional tokens,
        # then 5 over 3 at stage 2
        bad_spatial=[(33, 32), (32, 36), (40, 32)],
    ),
    ModelCase(
        # PEG after each downsampling; 32 x 64 image: 2x4 regional grid at stage 2, 1x2 windows at stage 4
        "peg-nonsquare",
        dict(SMALL, use_peg=True),
        (2, 32, 64, 3),
        bad_spatial=[(32, 60), (24, 64)],
    ),
    ModelCase(
        # the 3-conv local tokenizer (channel LayerNorms, no BatchNorm); one width for all stages;
        # window 3 on a 48 px image: 12 -> 6 -> 3 -> 2 local over 4 -> 2 -> 1 -> 1 regional, so the
        # last stage's windows are 2x2 (smaller than window_size, as the reference allows)
        "3conv-window-3",
        dict(dim=32, depth=(1, 1, 1, 2), window_size=3, num_classes=7, tokenize_local_3_conv=True),
        (2, 48, 48, 3),
        # 36 px: stage 2 has 5 local tokens over 2 regional ones
        bad_spatial=[(49, 48), (48, 36)],
    ),
]


class TestRegionViT(ContractSuite):
    model_cls = RegionViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("regionvit", "RegionViT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {
        "output": (1, 1000),
        "n_params_flax": (),
        "embeddings": (2, 64),
        "maps": [(2, 8, 8, 16), (2, 4, 4, 32), (2, 2, 2, 48), (2, 1, 1, 64)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=(16, 32, 48)), "dim needs to be a single value or a tuple of length 4"),
        (dict(depth=[1, 1]), "depth needs to be a single value or a tuple of length 4"),
        (dict(dim=(16, 0, 48, 64)), "dim must be positive"),
        (dict(depth=(1, -1, 1, 1)), "depth must be non-negative"),
        (dict(window_size=0), "window_size must be positive"),
        (dict(local_patch_size=0), "local_patch_size must be positive"),
        (dict(num_classes=-1), "num_classes must be >= 0"),
        (dict(channels=0), "channels must be positive"),
        (dict(attn_dropout=1.0), r"attn_dropout must be in \[0, 1\)"),
        (dict(ff_dropout=-0.1), r"ff_dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RegionViT(**{**SMALL, **kwargs})


def _init_shapes(model, shape):
    return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_a_later_stage_that_does_not_fit_names_the_stage_and_its_window():
    # window 7, 84 px: stage 1 has 21 local tokens over 3 regional ones (windows of 7); the
    # downsampling gives stage 2 11 local tokens over 2 regional ones: windows of 5 do not fit
    model = RegionViT(**dict(SMALL, window_size=7))
    variables = _init_shapes(model, (1, 28, 28, 3))
    with pytest.raises(ValueError, match=r"stage 2 a 11x11 feature map, but its local window is 5x5") as info:
        jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 84, 84, 3), jnp.float32))
    assert "(1, 84, 84, 3)" in str(info.value)
    # 40 px: stage 2 has 5 local tokens over 3 regional ones, which 1-token windows cannot pair up
    model = RegionViT(**SMALL)
    with pytest.raises(
        ValueError, match=r"stage 2 a 5x4 feature map, but its grid of regional tokens is 3x2"
    ):
        jax.eval_shape(model.apply, _init_shapes(model, (1, 32, 32, 3)), jnp.zeros((1, 40, 32, 3)))


def test_windows_larger_than_window_size_raise():
    # local_patch_size 8: 16 px regional patches over a stride-4 local map, windows of 4 > 2
    model = RegionViT(**dict(SMALL, local_patch_size=8))
    with pytest.raises(
        ValueError, match=r"stage 1 .* 4x4 local windows: expected windows of at most window_size 2"
    ):
        _init_shapes(model, (1, 32, 32, 3))


def test_accepts_the_sizes_the_reference_takes():
    # window 5, 60 px: an odd 3x3 regional grid whose downsampled 2x2 grid still fits (15 -> 8 local
    # tokens, windows of 4); depth 0 stages keep their (unused) position bias table
    model = RegionViT(**dict(SMALL, window_size=5, depth=(1, 0, 1, 0)))
    assert model.stage_sizes(60, 60) == [
        ((15, 15), (3, 3)),
        ((8, 8), (2, 2)),
        ((4, 4), (1, 1)),
        ((2, 2), (1, 1)),
    ]
    variables = _init_shapes(model, (1, 60, 60, 3))
    assert variables["params"]["stages_1"]["transformer"]["local_rel_pos_bias"].shape == (81, 4)
    for shape in [(2, 60, 60, 3), (1, 20, 40, 3), (1, 120, 80, 3)]:
        assert jax.eval_shape(model.apply, variables, jnp.zeros(shape)).shape == (shape[0], 10)


def test_parameter_tree_mirrors_the_reference():
    params = _init_shapes(RegionViT(**dict(SMALL, use_peg=True, depth=(1, 2, 1, 1))), (1, 32, 32, 3))[
        "params"
    ]
    assert set(params) == {
        "local_encoder",
        "region_encoder",
        "stages_0",
        "stages_1",
        "stages_2",
        "stages_3",
        "to_logits",
    }
    assert params["local_encoder"]["kernel"].shape == (8, 8, 3, 16)
    assert params["region_encoder"]["kernel"].shape == (3 * 8 * 8, 16)  # 1x1 conv on (c p1 p2) patches
    assert set(params["stages_0"]) == {"transformer"}  # no downsampling, no PEG in the first stage
    stage = params["stages_1"]
    assert set(stage) == {"downsample", "peg", "transformer"}
    assert stage["downsample"]["kernel"].shape == (3, 3, 16, 32)
    assert stage["peg"]["proj"]["kernel"].shape == (3, 3, 1, 32)  # depthwise
    transformer = stage["transformer"]
    assert set(transformer) == {"local_rel_pos_bias", "layers_0", "layers_1"}
    assert transformer["local_rel_pos_bias"].shape == (9, 4)  # (2 * window_size - 1) ** 2, heads
    layer = transformer["layers_0"]
    assert set(layer) == {"attn", "ff"}  # ONE attention module for the regional and the local attention
    assert layer["attn"]["to_qkv"]["kernel"].shape == (32, 3 * 4 * 32)  # 4 heads of 32, fixed
    assert "bias" not in layer["attn"]["to_qkv"] and layer["attn"]["to_out"]["kernel"].shape == (128, 32)
    assert layer["ff"]["fc1"]["kernel"].shape == (32, 128)
    assert set(params["to_logits"]) == {"norm", "fc"}

    conv3 = _init_shapes(RegionViT(**dict(SMALL, tokenize_local_3_conv=True)), (1, 32, 32, 3))["params"]
    encoder = conv3["local_encoder"]
    assert set(encoder) == {"conv1", "norm1", "conv2", "norm2", "conv3"}
    assert encoder["norm1"]["scale"].shape == (16,) and encoder["conv3"]["kernel"].shape == (3, 3, 16, 16)


def test_input_sizes():
    """Multiples of eight regional patches work (every stage then has whole windows); the
    smallest does, and the next side up, not a multiple of the regional patch, raises."""
    model = RegionViT(**SMALL)  # 8 px regional patches
    sizes = model.input_sizes()
    assert (sizes.smallest, sizes.step) == (64, 64)
    variables = _init_shapes(model, (1, 32, 32, 3))
    for side in (64, 128, 192):
        assert jax.eval_shape(model.apply, variables, jnp.zeros((1, side, side, 3))).shape == (1, 10)
    assert 65 not in sizes
    with pytest.raises(ValueError, match=r"received shape \(1, 65, 65, 3\)"):
        jax.eval_shape(model.apply, variables, jnp.zeros((1, 65, 65, 3)))
    default = RegionViT()
    assert default.input_sizes().smallest == 224 and 448 in default.input_sizes()


@pytest.mark.parametrize("name", [k for k in CONFIGS if k.startswith("regionvit_")])
def test_paper_configurations_build(name):
    model = RegionViT(**CONFIGS[name])
    side = model.input_sizes().smallest
    shapes = _init_shapes(model, (1, side, side, 3))
    assert jax.eval_shape(model.apply, shapes, jnp.zeros((1, side, side, 3))).shape == (1, 1000)


def test_small_recipe_builds():
    """The recipe trains on 32 x 32 images: a side below the full-window multiples, accepted too."""
    model = RegionViT(**CONFIGS["small"], num_classes=10)
    assert jax.eval_shape(
        model.apply, _init_shapes(model, (1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3))
    ).shape == (
        1,
        10,
    )


def test_any_number_of_channels():
    """The reference's local tokenizers take 3 channels whatever ``channels`` is; ours take ``channels``."""
    model = RegionViT(**dict(SMALL, channels=1))
    params = _init_shapes(model, (1, 32, 32, 1))["params"]
    assert params["local_encoder"]["kernel"].shape == (8, 8, 1, 16)
    assert params["region_encoder"]["kernel"].shape == (64, 16)


def test_windows_partition_and_merge():
    local = jnp.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    region = -jnp.arange(2 * 2 * 3 * 3).reshape(2, 2, 3, 3)
    tokens = partition_region_windows(local, region)  # a 2x3 grid of 2x2 windows
    assert tokens.shape == (2 * 2 * 3, 1 + 2 * 2, 3)
    # window (batch 1, row 1, column 2): its regional token first, then its local tokens row-major
    np.testing.assert_array_equal(tokens[1 * 6 + 1 * 3 + 2, 0], region[1, 1, 2])
    np.testing.assert_array_equal(tokens[1 * 6 + 1 * 3 + 2, 1:], local[1, 2:4, 4:6].reshape(4, 3))
    merged_local, merged_region = merge_region_windows(tokens, (2, 3), (2, 2))
    np.testing.assert_array_equal(merged_local, local)
    np.testing.assert_array_equal(merged_region, region)


def test_region_patches_flatten_channels_first():
    img = jnp.arange(1 * 4 * 4 * 2).reshape(1, 4, 4, 2)
    patches = region_patches(img, 2)
    assert patches.shape == (1, 2, 2, 8)
    np.testing.assert_array_equal(patches[0, 0, 1], img[0, 0:2, 2:4].transpose(2, 0, 1).reshape(-1))


def test_local_rel_pos_indices_keep_the_reference_layout():
    # row offsets have stride 1, column offsets stride 2 * window_size - 1 (the reference's quirk)
    idx = local_rel_pos_indices((2, 2), 2)  # tokens (0,0), (0,1), (1,0), (1,1)
    assert idx.shape == (4, 4)
    assert idx[0, 0] == 1 + 1 * 3  # centre of the 3x3 table
    assert idx[0, 1] == (0 + 1) + (-1 + 1) * 3  # one column to the left
    assert idx[0, 2] == (-1 + 1) + (0 + 1) * 3  # one row up
    assert idx[3, 0] == (1 + 1) + (1 + 1) * 3
    # a smaller window than window_size uses part of the table
    assert local_rel_pos_indices((1, 2), 3).tolist() == [[2 + 2 * 5, 2 + 1 * 5], [2 + 3 * 5, 2 + 2 * 5]]


@pytest.mark.parity
def test_local_rel_pos_indices_match_the_reference():
    import torch

    for window, window_size in [((7, 7), 7), ((2, 3), 4), ((1, 2), 2)]:
        grid = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij"))
        grid = grid.reshape(2, -1)
        grid = (grid[:, :, None] - grid[:, None, :]) + (window_size - 1)
        expected = (grid * torch.tensor([1, window_size * 2 - 1])[:, None, None]).sum(dim=0)
        np.testing.assert_array_equal(local_rel_pos_indices(window, window_size), expected.numpy())


@pytest.mark.parity
def test_converter_handles_empty_stages_and_odd_regional_grids():
    """``depth`` 0 leaves a stage's bias table unused; a 3x3 regional grid downsampled to 2x2."""
    from vit_layers_flax.testing import PARITY_RTOL, build_reference, reference_outputs, relative_error

    config = dict(dim=16, depth=(1, 0, 1, 0), window_size=5, num_classes=5, use_peg=True)
    torch_model = build_reference("regionvit", "RegionViT", config)
    model = RegionViT(**config)
    variables = from_vit_pytorch(torch_model.state_dict(), model)
    images = np.random.default_rng(3).standard_normal((2, 60, 60, 3), dtype=np.float32)
    error = relative_error(jax.jit(model.apply)(variables, images), reference_outputs(torch_model, images))
    assert error <= PARITY_RTOL


def test_readme_usage_builds_the_readme_configuration():
    """The README's usage constructs the model with exactly ``CONFIGS["readme"]``."""
    code = readme_python_blocks(Path(__file__).parents[1] / "README.md")[0]
    calls = [
        n
        for n in ast.walk(ast.parse(code))
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "RegionViT"
    ]
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]
