"""The pretrained NesT presets against timm: configurations, converted weights, loading through
the registry (local file and the Hub's cache), and adaptation at load."""

import importlib
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nest_flax import (
    PRESETS,
    TIMM_ARCHITECTURE,
    Aggregate,
    NesT,
    from_timm,
    from_vit_pytorch,
    resample_block_position_embedding,
)

from vit_layers_flax import ConversionError, create_model, get_preset, list_models
from vit_layers_flax.testing import (
    assert_parity,
    build_timm_reference,
    check_timm_pretrained_configs,
    numpy_state_dict,
    offline_hub,
    random_variables,
    relative_error,
    sample_images,
    timm_features,
)
from vit_layers_flax.testing.readme import run_readme_usage

README = Path(__file__).parents[1] / "README.md"
parity = pytest.mark.parity
#: the smallest preset, checked in CI; ``nox -s pretrained_parity`` (VIT_FLAX_ALL_PRESETS=1) checks all
SMALLEST = "nest_tiny_jx"
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"
#: a NesT-T with one block a level on 32-pixel images (a 2 x 2 patch block), for tests that compile
TINY = dict(image_size=32, block_repeats=(1, 1, 1))


def assert_same_variables(ours, theirs):
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves_with_path(theirs), strict=True
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def timm_state_dict(model, variables):
    """Our variables of a timm-architecture NesT (one block per ``layers_{j}``, no ``scan``) in
    timm's names and layout: the inverse of from_timm."""
    params = jax.tree.map(np.asarray, variables["params"])
    p, dim = model.patch_size, model.dim
    proj = params["to_patch_embedding"]["proj"]
    sd = {
        "patch_embed.proj.weight": proj["kernel"].reshape(p, p, model.channels, dim).transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": proj["bias"],
        "norm.weight": params["norm"]["scale"],
        "norm.bias": params["norm"]["bias"],
    }
    if "head" in params:
        sd["head.weight"], sd["head.bias"] = params["head"]["kernel"].T, params["head"]["bias"]

    def linear(name, layer):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = layer["kernel"].T, layer["bias"]

    def norm(name, layer):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = layer["scale"], layer["bias"]

    for i, depth in enumerate(model.block_repeats):
        stage, level, heads = params[f"stages_{i}"], f"levels.{i}", model.heads * 2**i
        sd[f"{level}.pos_embed"] = stage["pos_emb"][None]
        for j in range(depth):
            block, prefix = stage["transformer"][f"layers_{j}"], f"{level}.transformer_encoder.{j}"
            attn, ff = block["attn"], block["ff"]
            norm(f"{prefix}.norm1", attn["norm"])
            linear(f"{prefix}.attn.qkv", attn["to_qkv"])
            out = attn["to_out"]["kernel"]  # rows (h d) -> timm's (d h)
            out = out.reshape(heads, -1, out.shape[1]).transpose(1, 0, 2).reshape(out.shape)
            linear(f"{prefix}.attn.proj", {"kernel": out, "bias": attn["to_out"]["bias"]})
            norm(f"{prefix}.norm2", ff["norm"])
            linear(f"{prefix}.mlp.fc1", ff["fc1"])
            linear(f"{prefix}.mlp.fc2", ff["fc2"])
        if i:
            aggregate = params[f"stages_{i - 1}"]["aggregate"]
            sd[f"{level}.pool.conv.weight"] = aggregate["conv"]["kernel"].transpose(3, 2, 0, 1)
            sd[f"{level}.pool.conv.bias"] = aggregate["conv"]["bias"]
            norm(f"{level}.pool.norm", aggregate["norm"])
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def preset_variables(name, seed=0, **overrides):
    """``(model, variables)`` of preset ``name`` with random values, nothing compiled."""
    model = PRESETS[name].build(**overrides)
    return model, random_variables(model, model.sample_input(), seed=seed)


def test_list_models_lists_the_3_presets():
    assert set(list_models("nest_*")) == set(PRESETS) == {"nest_tiny_jx", "nest_small_jx", "nest_base_jx"}
    assert list_models("nest_*", pretrained=True) == [
        "nest_base_jx.goog_in1k",
        "nest_small_jx.goog_in1k",
        "nest_tiny_jx.goog_in1k",
    ]


@parity
def test_presets_are_timms(monkeypatch):
    """Every preset: timm's architecture (sizes, options, parameter count), every weight tag
    timm lists, default first, with timm's pretrained configuration."""
    timm = pytest.importorskip("timm")
    import torch
    from timm.layers.pool2d_same import MaxPool2dSame

    nest_module = importlib.import_module("timm.models.nest")
    build, built_with = nest_module.build_model_with_cfg, {}

    def recording(cls, variant, pretrained, **kwargs):
        built_with[variant] = kwargs
        return build(cls, variant, pretrained, **kwargs)

    monkeypatch.setattr(nest_module, "build_model_with_cfg", recording)
    check_timm_pretrained_configs(PRESETS, "nest_*")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            reference = timm.create_model(name, pretrained=False)
        model = preset.build(scan=True)
        kwargs = built_with[name]
        levels = reference.levels
        assert (model.image_size, model.patch_size, model.num_hierarchies) == (
            reference.patch_embed.img_size[0],
            reference.patch_embed.patch_size[0],
            reference.num_levels,
        )
        assert tuple(model.dim * 2**i for i in range(model.num_hierarchies)) == kwargs["embed_dims"]
        assert tuple(model.heads * 2**i for i in range(model.num_hierarchies)) == kwargs["num_heads"]
        assert model.block_repeats == kwargs["depths"] == tuple(len(v.transformer_encoder) for v in levels)
        block = levels[0].transformer_encoder[0]
        assert block.mlp.fc1.out_features == model.mlp_mult * model.dim
        assert (block.attn.qkv.bias is not None) == model.qkv_bias
        assert block.norm1.eps == levels[1].pool.norm.eps == reference.norm.eps == model.norm_epsilon
        assert isinstance(reference.patch_embed.norm, torch.nn.Identity) == (not model.patch_norms)
        assert kwargs["pad_type"] == "same" and isinstance(levels[1].pool.pool, MaxPool2dSame)
        assert model.pool_padding == "same" and model.pos_emb_per_block
        assert levels[0].pos_embed.shape[1:3] == (model.grid_size**2, model.seq_len)
        shapes = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())
        assert sum(x.size for x in jax.tree.leaves(shapes)) == sum(p.numel() for p in reference.parameters())


@pytest.fixture(scope="module")
def nest_file(tmp_path_factory):
    """A perturbed timm NesT-T (``nest_tiny_jx``), its safetensors file and timm's model of it."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    pytest.importorskip("timm")
    reference = build_timm_reference(SMALLEST, seed=1)
    weights = numpy_state_dict(reference)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path))
    return path, weights, reference


@parity
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_logits_match_timm(name, request):
    """Converted weights of every preset give timm's float32 eval logits at the preset's input
    size (the stacked layout of ``scan=True``). In CI the smallest's are checked through the
    README (test_readme_pretrained_usage_matches_timm), which compiles the same model."""
    if not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it" if name != SMALLEST else "the README test checks it")
    pytest.importorskip("timm")
    if name == SMALLEST:  # the file's model: one timm model built in CI, not two
        _, weights, reference = request.getfixturevalue("nest_file")
    else:
        reference = build_timm_reference(name)
        weights = numpy_state_dict(reference)
    model = PRESETS[name].build(scan=True, num_classes=reference.num_classes)
    variables = from_timm(weights, model)
    images = sample_images(model, batch=1)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=name)


@parity
def test_other_size_and_channels_load_as_timm_loads_them(nest_file, tmp_path):
    """``image_size=64`` resamples each level's block position embedding as timm's
    ``nest.resize_pos_embed`` (timm's own loader does not: its ``checkpoint_filter_fn`` looks
    for ``pos_embed_*`` keys, and refuses the ``levels.{i}.pos_embed`` of another size, so its
    model, built with ``img_size=64``, loads the file with the embeddings resampled by that
    function), ``channels`` adapts the patch projection as timm's loader does (``in_chans=1``:
    the sum over RGB): the same pooled features, every other parameter the checkpoint's. (A
    new ``num_classes`` is test_new_num_classes_keeps_every_other_parameter's.)"""
    path, state_dict, _ = nest_file
    timm = pytest.importorskip("timm")
    import torch
    from safetensors.numpy import save_file
    from timm.models.nest import resize_pos_embed

    resized = dict(state_dict)
    for i in range(3):  # 4 x 4 patches a block instead of 14 x 14
        pos = torch.from_numpy(state_dict[f"levels.{i}.pos_embed"])
        resized[f"levels.{i}.pos_embed"] = resize_pos_embed(pos, torch.empty(1, 4 ** (2 - i), 16, 1)).numpy()
    save_file({k: np.ascontiguousarray(v) for k, v in resized.items()}, str(tmp_path / "64.safetensors"))
    reference = timm.create_model(
        SMALLEST,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "64.safetensors")},
        img_size=64,
        in_chans=1,
    ).eval()
    model, variables = create_model(SMALLEST, pretrained=path, image_size=64, channels=1, scan=True)
    images = sample_images(model, batch=2)
    features = jax.jit(lambda v, x: model.apply(v, x, pre_logits=True))(variables, images)
    theirs = timm_features(reference, images, pre_logits=True)
    assert_parity(features, theirs, suite="timm", case=f"{SMALLEST}/64px/1ch/pre_logits")
    params = variables["params"]
    shapes = [params[f"stages_{i}"]["pos_emb"].shape for i in range(3)]
    assert shapes == [(16, 16, 96), (4, 16, 192), (1, 16, 384)]
    np.testing.assert_array_equal(params["head"]["kernel"], state_dict["head.weight"].T)
    np.testing.assert_array_equal(
        params["stages_2"]["transformer"]["layers"]["ff"]["fc1"]["kernel"][5],
        state_dict["levels.2.transformer_encoder.5.mlp.fc1.weight"].T,
    )
    aggregate = params["stages_1"]["aggregate"]
    np.testing.assert_array_equal(aggregate["norm"]["scale"], state_dict["levels.2.pool.norm.weight"])


@parity
@pytest.mark.parametrize("image_size", [32, 64, 288])
def test_block_position_embedding_resamples_as_timm(nest_file, image_size):
    """:func:`resample_block_position_embedding` is timm's ``nest.resize_pos_embed``, down
    (2 x 2 and 4 x 4 patches a block) and up (18 x 18)."""
    _, state_dict, _ = nest_file
    pytest.importorskip("timm")
    import torch
    from timm.models.nest import resize_pos_embed

    side = image_size // 16
    for i in range(3):
        pos = state_dict[f"levels.{i}.pos_embed"]
        theirs = resize_pos_embed(torch.from_numpy(pos), torch.empty(1, 4 ** (2 - i), side * side, 1)).numpy()
        ours = resample_block_position_embedding(pos[0], side)
        assert ours.shape == theirs.shape[1:] and ours.dtype == np.float32
        assert relative_error(ours, theirs[0]) <= 1e-5, (image_size, i)
    np.testing.assert_array_equal(resample_block_position_embedding(pos[0], 14), pos[0])


@parity
def test_more_channels_adapt_the_patch_projection_as_timm(nest_file):
    """``channels=5``: timm's ``adapt_input_conv`` (RGB repeated, scaled by 3/5), the rest as
    loaded (the forward pass with adapted channels is test_other_size_and_channels...)."""
    path, state_dict, _ = nest_file
    pytest.importorskip("timm")
    import torch
    from timm.models import adapt_input_conv

    model, variables = create_model(SMALLEST, pretrained=path, channels=5, scan=True)
    weight = adapt_input_conv(5, torch.from_numpy(state_dict["patch_embed.proj.weight"])).numpy()
    kernel = variables["params"]["to_patch_embedding"]["proj"]["kernel"]
    assert kernel.shape == (4 * 4 * 5, 96) and model.channels == 5
    np.testing.assert_allclose(kernel, weight.transpose(2, 3, 1, 0).reshape(-1, 96), rtol=1e-6, atol=1e-7)


@parity
@pytest.mark.parametrize("pad_type, pool_padding", [("same", "same"), ("", "symmetric")])
def test_aggregate_is_timms_conv_pool(pad_type, pool_padding):
    """The aggregation with timm's options is timm's ``ConvPool``: TF ``'SAME'`` pooling (the
    ``_jx`` models: nothing before, one row and column after) or torch's symmetric padding."""
    timm_nest = pytest.importorskip("timm.models.nest")
    import torch

    torch.manual_seed(0)
    reference = timm_nest.ConvPool(4, 6, norm_layer=timm_nest.LayerNorm, pad_type=pad_type)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    sd = numpy_state_dict(reference)
    variables = {
        "params": {
            "conv": {"kernel": sd["conv.weight"].transpose(2, 3, 1, 0), "bias": sd["conv.bias"]},
            "norm": {"scale": sd["norm.weight"], "bias": sd["norm.bias"]},
        }
    }
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 6, 8, 4)))
    ours = jax.jit(Aggregate(6, norm_epsilon=1e-6, pool_padding=pool_padding).apply)(variables, x)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert ours.shape == (2, 3, 4, 6)
    assert relative_error(ours, theirs) <= 1e-5


@pytest.fixture(scope="module")
def random_checkpoint():
    """Random variables of the smallest preset, made :data:`TINY` (no compile), and them in
    timm's layout."""
    model, variables = preset_variables(SMALLEST, seed=2, **TINY)
    return model, variables, timm_state_dict(model, variables)


def test_from_timm_inverts_the_test_writer(random_checkpoint):
    """from_timm reads back exactly what :func:`timm_state_dict` wrote (so the tests that load
    such files without torch load real timm layouts: the parity tests check the layout)."""
    model, variables, state_dict = random_checkpoint
    assert_same_variables(from_timm(state_dict, model), variables)


def test_new_num_classes_keeps_every_other_parameter(tmp_path, random_checkpoint):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    _, variables, state_dict = random_checkpoint
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    _, adapted = create_model(SMALLEST, pretrained=tmp_path / "model.safetensors", num_classes=3, **TINY)
    assert adapted["params"]["head"]["kernel"].shape == (384, 3)
    new = dict(jax.tree_util.tree_leaves_with_path(adapted))
    for path, value in jax.tree_util.tree_leaves_with_path(variables):
        if "'head'" not in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(new[path], value)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, random_checkpoint):
    """``nest_tiny_jx``'s default weights (made :data:`TINY`) in an offline cache; returns their
    variables."""
    _, variables, state_dict = random_checkpoint
    offline_hub(tmp_path, monkeypatch, {SMALLEST: state_dict})
    return variables


def test_pretrained_true_reads_the_hub_cache(hub_cache):
    _, variables = create_model(SMALLEST, pretrained=True, **TINY)
    assert_same_variables(variables, hub_cache)
    with pytest.raises(Exception, match=r"offline|cache|LocalEntryNotFound"):  # not in the cache
        create_model("nest_small_jx", pretrained=True)


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model(SMALLEST, pretrained=True)


@parity
def test_readme_pretrained_usage_matches_timm(tmp_path, monkeypatch, nest_file):
    """The README's ```python hub block, against an offline cache of a timm model's weights:
    its logits (``nest_tiny_jx`` at 224 x 224 with ``scan=True``) are timm's (CI's logits
    check of the smallest preset; test_logits_match_timm checks it in nox -s pretrained_parity)."""
    _, weights, reference = nest_file
    offline_hub(tmp_path, monkeypatch, {SMALLEST: weights})
    namespace = run_readme_usage(README, tag="hub")[0]
    config, images = namespace["config"], np.asarray(namespace["images"])
    normalized = (images - np.array(config.mean, np.float32)) / np.array(config.std, np.float32)
    assert_parity(
        namespace["logits"], timm_features(reference, normalized), suite="timm", case=f"{SMALLEST}/readme"
    )
    assert namespace["logits"].shape == (1, 1000) and namespace["tuned"].shape == (2, 10)
    assert len(namespace["list_models"]("nest_*")) == 3


def test_bad_names_sizes_and_checkpoints_raise_clear_errors(tmp_path, random_checkpoint):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    with pytest.raises(ValueError, match=r"unknown model 'nest_tiny'.*nest_tiny_jx"):
        create_model("nest_tiny")
    with pytest.raises(ValueError, match=r"no weights tagged 'in1k'.*goog_in1k"):
        get_preset("nest_tiny_jx.in1k")
    model, _, state_dict = random_checkpoint
    path = tmp_path / "model.safetensors"
    save_file(state_dict, str(path))
    with pytest.raises(ConversionError, match=r"not a checkpoint of nest_base_jx.*expected shape"):
        create_model("nest_base_jx", pretrained=path, image_size=32)
    with pytest.raises(
        ConversionError, match=r"not a checkpoint of nest_small_jx.*no key 'levels\.0\.transformer_encoder\.1"
    ):
        create_model("nest_small_jx", pretrained=path, image_size=32)
    extra = dict(state_dict, **{"levels.0.extra": np.zeros(3, np.float32)})
    with pytest.raises(ConversionError, match=r"unexpected state_dict keys.*levels\.0\.extra"):
        from_timm(extra, model)
    two_levels = dict(state_dict, **{"levels.1.pos_embed": np.zeros((1, 1, 4, 192), np.float32)})
    with pytest.raises(
        ConversionError, match=r"levels\.1\.pos_embed: expected shape \(1, 4, positions, 192\)"
    ):
        from_timm(two_levels, model)
    bad_qkv = dict(state_dict, **{"levels.2.transformer_encoder.0.attn.qkv.weight": np.zeros((3 * 384, 380))})
    with pytest.raises(ConversionError, match=r"layers_0/attn/to_qkv/kernel: expected shape \(384, 1152\)"):
        from_timm(bad_qkv, model)
    # the block grid (4 x 4 at the bottom, of 4 px patches) needs a multiple of 16 px
    with pytest.raises(ValueError, match=r"25 x 25 patch map .* cannot be split into a 4 x 4 block grid"):
        create_model(SMALLEST, pretrained=path, image_size=100)
    # the block position embeddings fix the input size
    tiny, variables, _ = random_checkpoint
    with pytest.raises(ValueError, match=r"received shape \(1, 48, 48, 3\).*configured \(32, 32\)"):
        jax.eval_shape(tiny.apply, variables, jax.ShapeDtypeStruct((1, 48, 48, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"received shape \(1, 16, 16, 3\).*configured \(32, 32\)"):
        jax.eval_shape(tiny.apply, variables, jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))


def test_each_converter_needs_its_architecture():
    timm_model = PRESETS[SMALLEST].build(**TINY)
    with pytest.raises(ConversionError, match=r"from_vit_pytorch: expected a NesT with patch_norms=True.*"
                       r"received patch_norms=False, qkv_bias=True, norm_epsilon=1e-06"):  # fmt: skip
        from_vit_pytorch({}, timm_model)
    with pytest.raises(ConversionError, match=r"from_timm: expected a NesT with patch_norms=False.*received "
                       r"qkv_bias=False, pos_emb_per_block=False"):  # fmt: skip
        from_timm({}, timm_model.clone(qkv_bias=False, pos_emb_per_block=False))


def test_original_options_change_the_architecture():
    """The original NesT's options: no patch norms, biased q/k/v, a position vector per
    position of every block at every level, a fixed input size; ``pool_padding`` checked."""
    default = NesT(image_size=32, patch_size=4, num_classes=1000, dim=96, heads=3, num_hierarchies=3,
                   block_repeats=(1, 1, 1))  # fmt: skip
    model = default.clone(**TIMM_ARCHITECTURE)
    assert model == PRESETS[SMALLEST].build(**TINY)
    params = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())["params"]
    plain = jax.eval_shape(default.init, jax.random.key(0), default.sample_input())["params"]
    assert set(params["to_patch_embedding"]) == {"proj"}
    assert set(plain["to_patch_embedding"]) == {"patch_norm", "proj", "norm"}
    assert [params[f"stages_{i}"]["pos_emb"].shape for i in range(3)] == [
        (16, 4, 96),
        (4, 4, 192),
        (1, 4, 384),
    ]
    assert plain["stages_0"]["pos_emb"].shape == (4,)
    assert set(params["stages_0"]["transformer"]["layers_0"]["attn"]["to_qkv"]) == {"kernel", "bias"}
    assert set(plain["stages_0"]["transformer"]["layers_0"]["attn"]["to_qkv"]) == {"kernel"}
    assert 32 in model.input_sizes() and 16 not in model.input_sizes() and 16 in default.input_sizes()
    with pytest.raises(
        ValueError, match=r"pool_padding must be one of \('symmetric', 'same'\), received 'valid'"
    ):
        model.clone(pool_padding="valid")
