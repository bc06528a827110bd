import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from crossformer_flax import (
    CONFIGS,
    CrossEmbedLayer,
    CrossFormer,
    LongShortDistanceAttention,
    from_vit_pytorch,
    relative_position_indices,
    relative_positions,
)
from crossformer_flax.attention import distance_windows, merge_distance_windows

from vit_layers_flax import InputSizes
from vit_layers_flax.testing import (
    PARITY_RTOL,
    ContractSuite,
    ModelCase,
    load_reference,
    random_variables,
    readme_python_blocks,
    relative_error,
)

README = Path(__file__).parents[1] / "README.md"

# Small cases run one layer in all (stages of depth 0 are their embedding only): each layer is
# two attentions and two feed-forwards, and costs seconds of XLA compilation per compiled
# function (the README configuration's parity covers stages of several layers). Every window
# of a stage with layers holds at least 2 x 2 positions (with a single key the queries and the
# position bias would get no gradient).
SMALL = dict(
    num_classes=10,
    dim=(32, 48, 48, 64),
    depth=(0, 1, 0, 0),
    global_window_size=2,
    local_window_size=4,
    cross_embed_kernel_sizes=((2, 4), (2, 4), (2, 4), (2, 4)),
    cross_embed_strides=2,
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 224, 224, 3), readme_config=True),
    # 32 -> 16 -> 8 -> 4 -> 2 (stride 2, kernels 2 and 4, 16 + 16 channels). Stage 2: one layer
    # of one head of 32 (inner width 32 != dim 48) on the 8x8 map, 4x4 local windows and 2x2
    # global windows of positions 4 apart.
    ModelCase(
        "dropout-two-kernels",
        dict(SMALL, attn_dropout=0.1, ff_dropout=0.1),
        (2, 32, 32, 3),
        # 36 -> 18 -> 9, 32x20 -> 16x10 -> 8x5 and 4 -> 2 -> 1: stage 2 not a multiple of its 4x4
        # local window. (33 floors to 16 and is accepted, as in the reference.)
        bad_spatial=[(36, 32), (32, 20), (4, 4)],
    ),
    # The default four kernels (4, 8, 16, 32) with stride 4 (32 + 16 + 8 + 8 channels), a
    # non-square gray image: 32x64 -> 8x16 -> 4x8 -> 2x4 -> 1x2. Stage 1: one layer of two heads,
    # 4x4 local windows, 2x2 global windows (positions 4 rows, 8 columns apart). Stages 2-4 have
    # no layers, so their 7x7 windows constrain nothing.
    ModelCase(
        "default-kernels-nonsquare-gray",
        dict(
            num_classes=7,
            channels=1,
            dim=(64, 32, 32, 32),
            depth=(1, 0, 0, 0),
            global_window_size=(2, 1, 1, 1),
            local_window_size=(4, 7, 7, 7),
        ),
        (2, 32, 64, 1),
        # 32x60 -> 8x15 and 40x64 -> 10x16: stage 1 not a multiple of its 4x4 local window
        bad_spatial=[(32, 60), (40, 64)],
    ),
    # Three odd kernels given unsorted (7, 3, 5), stride 2: kernel - stride is odd, the padding
    # rounds down and 33 -> (33 - 1) // 2 = 16 -> 8 -> 4 -> 2; 32 + 16 + 16 channels. Stage 2:
    # one layer of one head of 32 (dim_head == dim, to_out kept as in the reference), 4x4 local
    # and 2x2 global windows.
    ModelCase(
        "odd-kernels-odd-size-4ch",
        dict(
            num_classes=5,
            channels=4,
            dim=(64, 32, 32, 32),
            depth=(0, 1, 0, 0),
            global_window_size=(2, 2, 1, 1),
            local_window_size=4,
            cross_embed_kernel_sizes=((7, 3, 5), (2, 4), (2, 4), (2, 4)),
            cross_embed_strides=2,
        ),
        (2, 33, 33, 4),
        # 32 -> 15 -> 7 and 40 -> 19 -> 9: stage 2 not a multiple of 4. (34 and 35 are accepted.)
        bad_spatial=[(32, 33), (33, 40)],
    ),
]


class TestCrossFormer(ContractSuite):
    model_cls = CrossFormer
    convert = staticmethod(from_vit_pytorch)
    reference = ("crossformer", "CrossFormer")
    cases = CASES
    # the position-bias MLP ends in Dense(1): its bias is added to every logit of every
    # window's attention, which the softmax cancels (so does the reference's)
    shift_invariant_params = (r"\['dpb'\]\['fc_3'\]\['bias'\]",)
    readme = README
    readme_shapes = {
        "output": (1, 1000),
        "n_params_flax": (),
        "embeddings": (2, 64),
        "maps": [(2, 8, 8, 48), (2, 2, 2, 64)],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=-1), "num_classes must not be negative"),
        (dict(channels=0), "channels must be positive"),
        (dict(attn_dropout=1.0), r"attn_dropout must be in \[0, 1\)"),
        (dict(ff_dropout=-0.1), r"ff_dropout must be in \[0, 1\)"),
        (dict(dim=(32, 64, 64)), "one value or four"),
        (dict(cross_embed_kernel_sizes=(2, 4, 2, 4)), "a non-empty sequence of kernel sizes per stage"),
        (dict(cross_embed_kernel_sizes=((2, 4), (), (2, 4), (2, 4))), "received \\(\\) for stage 2"),
        (dict(dim=(32, 16, 32, 32)), "stage 2 dim must be at least 32"),
        (dict(depth=(1, 0, -1, 0)), "stage 3 sizes .* depth=-1"),
        (dict(local_window_size=(4, 0, 2, 2)), "stage 2 sizes .* local_window_size=0"),
        (dict(cross_embed_strides=(2, 2, 2, 0)), "stage 4 sizes .* stride=0"),
        (
            dict(cross_embed_strides=(4, 2, 2, 2)),
            r"stage 1 cross-embedding kernels \(2, 4\) must not be smaller",
        ),
        (
            dict(cross_embed_kernel_sizes=((2, 3), (2, 4), (2, 4), (2, 4)), cross_embed_strides=1),
            "mix odd and even",
        ),
        (
            dict(cross_embed_kernel_sizes=((2, 4, 6, 8, 10, 12, 14), (2, 4), (2, 4), (2, 4))),
            "too small for 7 kernel",
        ),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CrossFormer(**{**SMALL, **kwargs})


def _shape(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_image_size_breaking_a_later_stage_names_the_stage_and_window():
    model = CrossFormer(**CASES[3].kwargs)
    variables = random_variables(model, _shape(1, 33, 33, 4))
    # 32x33 -> stage 1 15x16 (no layers, no windows); stage 2 is 7x8, not a multiple of its 4x4
    # local window
    with pytest.raises(
        ValueError, match=r"\(1, 32, 33, 4\) give stage 2 a 7x8 feature map, but its local window is 4x4"
    ):
        jax.eval_shape(model.apply, variables, _shape(1, 32, 33, 4))
    # 16x32 -> 4x8 (stage 1 fits) -> 2x4 -> 1x2: too small for stage 4's embedding (kernel 4,
    # padding 1, stride 2), an error rather than an empty map
    small = CrossFormer(**CASES[2].kwargs)
    variables = random_variables(small, _shape(1, 32, 64, 1))
    with pytest.raises(ValueError, match=r"give stage 4 a 1x2 input, too small .* at least 2x2"):
        jax.eval_shape(small.apply, variables, _shape(1, 16, 32, 1))


def test_accepts_the_sizes_the_reference_takes():
    """Sizes floor through the strides; stages without layers put no constraint on the size."""
    model = CrossFormer(**CASES[2].kwargs)  # stage windows: (4, 2), then no layers
    variables = random_variables(model, _shape(1, 32, 64, 1))
    for height, width in [(32, 64), (35, 67), (64, 32), (48, 64), (160, 96)]:
        out = jax.eval_shape(model.apply, variables, _shape(2, height, width, 1))
        assert out.shape == (2, 7)
    assert model.stage_sizes(35, 67) == [(8, 16), (4, 8), (2, 4), (1, 2)]
    readme = CrossFormer(**CASES[0].kwargs)
    assert readme.stage_sizes(224, 224) == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert readme.stage_sizes(226, 448) == [(56, 112), (28, 56), (14, 28), (7, 14)]


def _accepts(model, side):
    try:
        model._check_stage_sizes(_shape(1, side, side, model.channels))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "kwargs, sizes, next_rejected",
    [
        (SMALL, InputSizes(16, 16), 20),  # stage 2's 4x4 windows: side // 4 a multiple of 4
        (CASES[2].kwargs, InputSizes(32, 16), 36),  # stage 1: side // 4 a multiple of 4; stage 4 >= 1
        (CASES[3].kwargs, InputSizes(17, 16), 21),  # odd kernel - stride: (side - 1) // 2
        (CONFIGS["small"], InputSizes(32, 32), 34),
        (CONFIGS["readme"], InputSizes(224, 224), 228),
        # kernels 2 and 3 with stride 2 agree on odd sides only
        (
            {**SMALL, "depth": 0, "cross_embed_kernel_sizes": ((2, 3), (2, 4), (2, 4), (2, 4))},
            InputSizes(17, 2),
            18,
        ),
    ],
)
def test_input_sizes(kwargs, sizes, next_rejected):
    """The smallest side fits every stage (and none below it), the step repeats the accepted
    sides, the sides up to ``next_rejected`` are accepted and ``next_rejected`` raises."""
    model = CrossFormer(**kwargs)
    assert model.input_sizes() == sizes
    smallest = sizes.smallest
    assert not any(_accepts(model, side) for side in range(1, smallest))
    for side in range(smallest, smallest + 2 * sizes.step):
        assert _accepts(model, side) == _accepts(model, side + sizes.step), side
    channels = model.channels
    variables = random_variables(model, _shape(1, smallest, smallest, channels))
    assert jax.eval_shape(model.apply, variables, _shape(1, smallest, smallest, channels)).shape[0] == 1
    assert all(_accepts(model, side) for side in range(smallest, next_rejected))
    with pytest.raises(ValueError, match="CrossFormer: images of shape"):
        jax.eval_shape(model.apply, variables, _shape(1, next_rejected, next_rejected, channels))


def test_input_sizes_raises_when_no_size_fits():
    # stage 1's maps are multiples of 4; stage 2 (odd kernel - stride) needs (side - 1) // 2 to
    # be a multiple of 4 too, which no multiple of 4 gives
    model = CrossFormer(
        **{
            **SMALL,
            "depth": (1, 1, 0, 0),
            "local_window_size": 4,
            "global_window_size": 1,
            "cross_embed_kernel_sizes": ((2, 4), (3, 5), (2, 4), (2, 4)),
        }
    )
    with pytest.raises(ValueError, match="no image size fits the windows of stage 1"):
        model.input_sizes()


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.startswith("crossformer_")])
def test_paper_configs_initialise_at_224(name):
    model = CrossFormer(**CONFIGS[name])
    assert 224 in model.input_sizes()
    shapes = jax.eval_shape(model.init, jax.random.key(0), _shape(1, 224, 224, 3))
    assert shapes["params"]["to_logits"]["kernel"].shape[1] == 1000


def test_readme_usage_is_the_readme_config():
    (call,) = [
        node
        for node in ast.walk(ast.parse(readme_python_blocks(README)[0]))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CrossFormer"
    ]
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == CONFIGS["readme"]


def test_mixed_kernel_parities_fail_only_where_the_reference_fails():
    """Kernels 2 and 3 with stride 2 pad by 0 and 0: 7 -> 3 for both, 8 -> 4 and 3 (torch.cat fails)."""
    model = CrossFormer(**{**SMALL, "depth": 0, "cross_embed_kernel_sizes": ((2, 3), (2, 4), (2, 4), (2, 4))})
    variables = random_variables(model, _shape(1, 33, 33, 3))
    assert jax.eval_shape(model.apply, variables, _shape(1, 33, 31, 3)).shape == (1, 10)
    with pytest.raises(
        ValueError,
        match=r"stage 1 a 32x31 input, on which .* disagree \(16x15 from kernel 2, 15x15 from kernel 3\)",
    ):
        jax.eval_shape(model.apply, variables, _shape(1, 32, 31, 3))


def test_distance_windows():
    x = jnp.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    short = distance_windows(x, 2, "short")  # a 2x3 grid of adjacent 2x2 windows per image
    assert short.shape == (2 * 2 * 3, 4, 3)
    np.testing.assert_array_equal(short[1 * 6 + 1 * 3 + 2], x[1, 2:4, 4:6].reshape(4, 3))
    long = distance_windows(x, 2, "long")  # 6 windows of 2x2 positions, 2 rows and 3 columns apart
    assert long.shape == (2 * 2 * 3, 4, 3)
    np.testing.assert_array_equal(long[1 * 6 + 1 * 3 + 2], x[1, 1::2, 2::3].reshape(4, 3))
    for kind, windows in (("short", short), ("long", long)):
        np.testing.assert_array_equal(merge_distance_windows(windows, 2, kind, (4, 6)), x)


def test_position_bias_indexing_is_the_references():
    """The MLP's table has (2w + 1)^2 entries, the indices address a (2w - 1)^2 one."""
    w = 3
    table = relative_positions(w)
    assert table.shape == (49, 2) and table[0].tolist() == [-3, -3] and table[24].tolist() == [0, 0]
    indices = relative_position_indices(w)
    assert indices.shape == (9, 9) and indices.min() == 0 and indices.max() == 24 == 5**2 - 1
    # query 0 at (0, 0), key 8 at (2, 2): offset (-2, -2), index 0, which holds the offset (-3, -3);
    # a query with itself (offset (0, 0)) gets index 12, the table's (-2, 2)
    assert indices[0, 8] == 0 and table[indices[0, 8]].tolist() == [-3, -3]
    assert set(np.diag(indices).tolist()) == {12} and table[12].tolist() == [-2, 2]


def test_position_bias_runs_once_per_attention_call():
    """One bias MLP evaluation on the (2w + 1)^2 offsets, whatever the number of windows."""
    attn = LongShortDistanceAttention(64, "long", 2)
    x = _shape(3, 8, 12, 64)  # 3 * 4 * 6 = 72 windows
    variables = jax.eval_shape(attn.init, jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(attn.apply)(variables, x)
    mlp = [
        e
        for e in jaxpr.jaxpr.eqns
        if e.primitive.name == "dot_general" and e.outvars[0].aval.shape[0] == 25  # (2 * 2 + 1) ** 2 offsets
    ]
    assert len(mlp) == 4


def test_parameter_tree_mirrors_the_reference():
    model = CrossFormer(**CASES[2].kwargs)
    params = jax.eval_shape(model.init, jax.random.key(0), _shape(1, 32, 64, 1))["params"]
    assert set(params) == {"stages_0", "stages_1", "stages_2", "stages_3", "to_logits"}
    assert set(params["stages_3"]) == {"cel"}  # no layers
    cel = params["stages_0"]["cel"]
    assert [cel[f"convs_{i}"]["kernel"].shape for i in range(4)] == [
        (4, 4, 1, 32),
        (8, 8, 1, 16),
        (16, 16, 1, 8),
        (32, 32, 1, 8),
    ]
    assert set(params["stages_0"]) == {"cel", "layers_0"}
    layer = params["stages_0"]["layers_0"]
    assert set(layer) == {"short_attn", "short_ff", "long_attn", "long_ff"}
    attn = layer["long_attn"]
    assert set(attn) == {"norm", "to_qkv", "to_out", "dpb"}
    assert attn["norm"]["scale"].shape == (64,) and attn["to_qkv"]["kernel"].shape == (64, 3 * 64)
    assert set(attn["dpb"]) == {"fc_0", "norm_0", "fc_1", "norm_1", "fc_2", "norm_2", "fc_3"}
    assert attn["dpb"]["fc_0"]["kernel"].shape == (2, 16) and attn["dpb"]["fc_3"]["kernel"].shape == (16, 1)
    assert set(layer["short_ff"]) == {"norm", "fc1", "fc2"} and layer["short_ff"]["fc1"]["kernel"].shape == (
        64,
        256,
    )


@pytest.mark.parity
def test_cross_embed_layer_matches_reference():
    """Unsorted kernels; the odd input side where mixed kernel parities agree."""
    import torch

    torch.manual_seed(0)
    reference = load_reference("crossformer").CrossEmbedLayer(3, 20, (6, 2, 3), stride=2)
    sd = {k: v.numpy() for k, v in reference.state_dict().items()}
    params = {
        f"convs_{i}": {"kernel": sd[f"convs.{i}.weight"].transpose(2, 3, 1, 0), "bias": sd[f"convs.{i}.bias"]}
        for i in range(3)
    }
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 9, 11, 3)))
    ours = CrossEmbedLayer(20, (6, 2, 3), stride=2).apply({"params": params}, x)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert ours.shape == (2, 4, 5, 20)  # 10 + 5 + 5 channels
    assert relative_error(ours, theirs) <= PARITY_RTOL


@pytest.mark.parity
def test_relative_position_indices_equal_the_reference_buffer():
    reference = load_reference("crossformer")
    for w in (1, 2, 3, 7):
        buffer = reference.Attention(32, "short", w).rel_pos_indices.numpy()
        np.testing.assert_array_equal(relative_position_indices(w), buffer)
