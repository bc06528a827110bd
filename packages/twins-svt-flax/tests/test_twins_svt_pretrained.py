"""The pretrained Twins-SVT presets against timm: configurations, converted weights, loading
through the registry (local file and the Hub's cache), and adaptation at load."""

import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from twins_svt_flax import PRESETS, TwinsSVT, from_timm, from_vit_pytorch

from vit_layers_flax import ConversionError, InputSizes, create_model, get_preset, list_models
from vit_layers_flax.testing import (
    assert_parity,
    build_timm_reference,
    check_timm_pretrained_configs,
    numpy_state_dict,
    offline_hub,
    random_variables,
    sample_images,
    timm_features,
)
from vit_layers_flax.testing.readme import run_readme_usage

README = Path(__file__).parents[1] / "README.md"
parity = pytest.mark.parity
#: the smallest preset, checked in CI (its logits through the README's hub block, see
#: test_readme_pretrained_usage_matches_timm); ``nox -s pretrained_parity``
#: (VIT_FLAX_ALL_PRESETS=1) checks all
SMALLEST = "twins_svt_small"
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"


def timm_state_dict(model, variables):
    """Our variables of a timm-architecture Twins-SVT (one block per ``layers_{i}``, no
    ``scan``) in timm's names and layout: the inverse of from_timm."""
    params = jax.tree.map(np.asarray, variables["params"])
    sd = {}

    def linear(name, layer):
        sd[f"{name}.weight"] = layer["kernel"].T
        if "bias" in layer:
            sd[f"{name}.bias"] = layer["bias"]

    def norm(name, layer):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = layer["scale"], layer["bias"]

    def conv(name, layer):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = layer["kernel"].transpose(3, 2, 0, 1), layer["bias"]

    def half(prefix, attn, ff):
        norm(f"{prefix}.norm1", attn["norm"])
        linear(f"{prefix}.attn.proj", attn["to_out"])
        norm(f"{prefix}.norm2", ff["norm"])
        linear(f"{prefix}.mlp.fc1", ff["fc1"])
        linear(f"{prefix}.mlp.fc2", ff["fc2"])

    channels = model.channels
    for s in range(4):
        stage, config = params[f"stages_{s}"], model.stage_config(s + 1)
        p, dim = config["patch_size"], config["emb_dim"]
        embedding = stage["patch_embedding"]
        kernel = embedding["proj"]["kernel"].reshape(p, p, channels, dim).transpose(3, 2, 0, 1)
        sd[f"patch_embeds.{s}.proj.weight"], sd[f"patch_embeds.{s}.proj.bias"] = (
            kernel,
            embedding["proj"]["bias"],
        )
        norm(f"patch_embeds.{s}.norm", embedding["norm"])
        blocks = [stage["first_transformer"]["layers_0"]]
        blocks += [stage["transformer"][f"layers_{j}"] for j in range(config["depth"])]
        for j, block in enumerate(blocks):
            local, global_ = f"blocks.{s}.{2 * j}", f"blocks.{s}.{2 * j + 1}"
            half(local, block["local_attn"], block["ff1"])
            qkv = {k: np.concatenate([block["local_attn"]["to_q"][k], block["local_attn"]["to_kv"][k]], -1)
                   for k in ("kernel", "bias")}  # fmt: skip
            linear(f"{local}.attn.qkv", qkv)
            attn = block["global_attn"]
            half(global_, attn, block["ff2"])
            linear(f"{global_}.attn.q", attn["to_q"])
            linear(f"{global_}.attn.kv", attn["to_kv"])
            if "reduce" in attn:
                conv(f"{global_}.attn.sr", attn["reduce"])
                norm(f"{global_}.attn.norm", attn["reduce_norm"])
        conv(f"pos_block.{s}.proj.0", blocks[0]["peg"]["proj"])
        channels = dim
    norm("norm", params["norm"])
    if "to_logits" in params:
        linear("head", params["to_logits"])
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def test_list_models_lists_the_3_presets():
    assert set(list_models("twins_svt_*")) == set(PRESETS)
    assert len(PRESETS) == 3
    assert list_models("twins_svt_*", pretrained=True) == [
        "twins_svt_base.in1k",
        "twins_svt_large.in1k",
        "twins_svt_small.in1k",
    ]


@parity
def test_presets_are_timms():
    """Every preset: timm's architecture (stage sizes, windows, sub-sampling, heads, norms;
    with VIT_FLAX_ALL_PRESETS=1 the same parameter count, which in CI the smallest's strict
    conversion implies), every weight tag timm lists, default first, with timm's pretrained
    configuration."""
    timm = pytest.importorskip("timm")
    import torch

    check_timm_pretrained_configs(PRESETS, "twins_svt_*")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            reference = timm.create_model(name, pretrained=False)
        model = preset.build(scan=True)
        assert model.image_size == reference.patch_embeds[0].img_size[0]
        assert model.peg_kernel_size == reference.pos_block[0].proj[0].kernel_size[0]
        for s, (embed, blocks) in enumerate(zip(reference.patch_embeds, reference.blocks, strict=True)):
            config = model.stage_config(s + 1)
            local, global_ = blocks[0], blocks[1]
            assert (
                config["emb_dim"],
                config["patch_size"],
                2 * (config["depth"] + 1),
                config["local_patch_size"],
                config["global_k"],
                config["heads"],
                model.dim_head,
                4 * config["emb_dim"],
            ) == (
                reference.embed_dims[s],
                embed.patch_size[0],
                len(blocks),
                local.attn.ws,
                global_.attn.sr_ratio,
                local.attn.num_heads,
                config["emb_dim"] // global_.attn.num_heads,
                local.mlp.fc1.out_features,
            ), (name, s)
            assert all(
                hasattr(b.attn, "ws") == (i % 2 == 0) for i, b in enumerate(blocks)
            )  # local, global ...
            assert local.norm1.eps == global_.norm2.eps == reference.norm.eps == model.norm_epsilon
            assert embed.norm.eps == 1e-5
        if ALL_PRESETS:  # in CI the smallest's strict conversion checks every parameter's shape
            shapes = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())
            count = sum(x.size for x in jax.tree.leaves(shapes))
            assert count == sum(p.numel() for p in reference.parameters()), name


@pytest.fixture(scope="module")
def twins_file(tmp_path_factory):
    """A perturbed timm Twins-SVT-S, its safetensors file and timm's model of it. While the
    module's tests use it torch runs on one thread: its passes here are a fraction of a
    second on one, but seconds each where its thread pool competes for a busy CPU."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    pytest.importorskip("timm")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = build_timm_reference(SMALLEST, seed=1)
        weights = numpy_state_dict(reference)
        path = tmp_path_factory.mktemp("weights") / "model.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path))
        yield path, weights, reference
    finally:
        torch.set_num_threads(threads)


@parity
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_logits_match_timm(name):
    """Converted weights of every preset give timm's float32 eval logits at the preset's
    input size (the stacked layout of ``scan=True``). In CI the smallest's are checked
    through the README's usage (test_readme_pretrained_usage_matches_timm)."""
    if not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    pytest.importorskip("timm")
    reference = build_timm_reference(name)
    model = PRESETS[name].build(scan=True, num_classes=reference.num_classes)
    variables = from_timm(numpy_state_dict(reference), model)
    images = sample_images(model)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=name)


@parity
def test_readme_pretrained_usage_matches_timm(tmp_path, monkeypatch, twins_file):
    """The README's ```python hub block, as written, against an offline cache of timm weights
    (CI's parity check of the presets): its Twins-SVT-S logits at 224 x 224 (``scan=True``)
    are timm's, and its model for 64 x 64 images (no position embedding to resample; every
    local window zero-padded as timm pads them: maps 16, 8, 4, 2 -> 21, 14, 7, 7) gives the
    pooled features of timm's model built with ``img_size=64`` and loaded from the same file."""
    path, weights, reference = twins_file
    timm = pytest.importorskip("timm")
    offline_hub(tmp_path, monkeypatch, {SMALLEST: weights})
    namespace = run_readme_usage(README, tag="hub")[0]
    assert len(namespace["list_models"]("twins_svt_*")) == 3
    config = namespace["config"]
    mean, std = np.array(config.mean, np.float32), np.array(config.std, np.float32)
    images = (np.asarray(namespace["images"]) - mean) / std
    assert namespace["logits"].shape == (1, 1000)
    assert_parity(
        namespace["logits"], timm_features(reference, images), suite="timm", case=f"{SMALLEST}/readme"
    )
    assert namespace["backbone"].image_size == 64
    small_reference = timm.create_model(
        SMALLEST, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, img_size=64
    ).eval()
    small = (np.asarray(namespace["small"]) - mean) / std
    theirs = timm_features(small_reference, small, pre_logits=True)
    assert_parity(namespace["features"], theirs, suite="timm", case=f"{SMALLEST}/readme/64px/pre_logits")


@parity
def test_channels_adapt_the_patch_projection_as_timm(twins_file):
    """``channels``: timm's ``adapt_input_conv`` on the first patch convolution (1: the sum
    over RGB; 5: RGB repeated, scaled by 3/5); the forward pass is the same for any channels."""
    path, state_dict, _ = twins_file
    pytest.importorskip("timm")
    import torch
    from timm.models import adapt_input_conv

    model, from_file = create_model(SMALLEST, pretrained=path, channels=5, scan=True)
    assert model.channels == 5 and model.sample_input().shape == (1, 224, 224, 5)
    one = from_timm(state_dict, PRESETS[SMALLEST].build(channels=1, scan=True))
    for channels, variables in ((5, from_file), (1, one)):
        weight = adapt_input_conv(
            channels, torch.from_numpy(state_dict["patch_embeds.0.proj.weight"])
        ).numpy()
        kernel = variables["params"]["stages_0"]["patch_embedding"]["proj"]["kernel"]
        assert kernel.shape == (4 * 4 * channels, 64)
        np.testing.assert_allclose(kernel, weight.transpose(2, 3, 1, 0).reshape(-1, 64), rtol=1e-6, atol=1e-7)


#: fewer blocks (stage 3: one after the first, stage 4: the first only) and the smallest images,
#: for the tests that load random checkpoints: every layer kind, a fraction of the tracing
REDUCED = dict(image_size=32, s3_depth=1, s4_depth=0)


@pytest.fixture(scope="module")
def random_checkpoint():
    """Random variables of the smallest preset, reduced (no compile), and them in timm's layout."""
    model = PRESETS[SMALLEST].build(**REDUCED)
    variables = random_variables(model, model.sample_input(), seed=2)
    return model, variables, timm_state_dict(model, variables)


def assert_same_variables(ours, theirs, skip=()):
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves_with_path(theirs), strict=True
    ):
        if not any(name in jax.tree_util.keystr(path) for name in skip):
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_from_timm_inverts_the_test_writer(random_checkpoint):
    """from_timm reads back exactly what :func:`timm_state_dict` wrote (so the tests that load
    such files without torch load real timm layouts: the parity tests check the layout)."""
    model, variables, state_dict = random_checkpoint
    assert_same_variables(from_timm(state_dict, model), variables)


def test_a_file_loads_with_new_num_classes_keeping_every_other_parameter(tmp_path, random_checkpoint):
    """``pretrained=<safetensors file>`` with ``num_classes=3``: a new head, every other
    parameter the file's."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    _, variables, state_dict = random_checkpoint
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    model, adapted = create_model(
        SMALLEST, pretrained=tmp_path / "model.safetensors", num_classes=3, **REDUCED
    )
    assert model == PRESETS[SMALLEST].build(**dict(REDUCED, num_classes=3))
    assert adapted["params"]["to_logits"]["kernel"].shape == (512, 3)
    assert_same_variables(
        {k: v for k, v in adapted["params"].items() if k != "to_logits"},
        {k: v for k, v in variables["params"].items() if k != "to_logits"},
    )


def test_pretrained_true_reads_the_hub_cache(tmp_path, monkeypatch, random_checkpoint):
    _, expected, state_dict = random_checkpoint
    offline_hub(tmp_path, monkeypatch, {SMALLEST: state_dict})
    _, variables = create_model(SMALLEST, pretrained=True, **REDUCED)
    assert_same_variables(variables, expected)
    with pytest.raises(Exception, match=r"offline|cache|LocalEntryNotFound"):  # not in the cache
        create_model("twins_svt_base", pretrained=True)


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model(SMALLEST, pretrained=True)


def test_bad_names_sizes_and_checkpoints_raise_clear_errors(tmp_path, random_checkpoint):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    with pytest.raises(ValueError, match=r"unknown model 'twins_svt_smal'.*twins_svt_small"):
        create_model("twins_svt_smal")
    with pytest.raises(ValueError, match=r"no weights tagged 'in21k'.*in1k"):
        get_preset("twins_svt_small.in21k")
    _, _, state_dict = random_checkpoint
    path = tmp_path / "model.safetensors"
    save_file(state_dict, str(path))
    # sizes the stages refuse, before anything is read: patches of 4, 2, 2, 2 (multiples of 32),
    # maps at least the global sub-sampling strides 8, 4, 2, 1 (stage 1's 4 x 4 < 8 x 8)
    with pytest.raises(
        ValueError,
        match=r"image_size 100 is not a size .*sides 32, then every 32 more.*stage 2 a 25x25.*patch size",
    ):
        create_model(SMALLEST, pretrained=path, image_size=100)
    with pytest.raises(ValueError, match=r"image_size \(16, 64\) .*stage 1 a 4x16 .*stride is 8x8"):
        create_model(SMALLEST, pretrained=path, image_size=(16, 64))
    with pytest.raises(
        ConversionError, match=r"not a checkpoint of twins_svt_base.*expected shape \(96, channels"
    ):
        create_model("twins_svt_base", pretrained=path, **REDUCED)
    with pytest.raises(ConversionError, match=r"no key 'blocks\.3\.2\.norm1\.weight'"):
        from_timm(state_dict, PRESETS[SMALLEST].build(**dict(REDUCED, s4_depth=1)))  # a TwinsBlock too many
    # a TwinsBlock short (timm's blocks 2.2 and 2.3 unread), an unknown key and a mis-shaped one: all reported
    bad = dict(state_dict, **{"blocks.0.1.attn.extra": np.zeros(3, np.float32)})
    bad["blocks.1.1.attn.kv.weight"] = np.zeros((256, 120), np.float32)
    with pytest.raises(
        ConversionError,
        match=r"unexpected state_dict keys.*blocks\.0\.1\.attn\.extra.*blocks\.2\.2\.attn.*"
        r"global_attn/to_kv/kernel: expected shape \(128, 256\)",
    ):
        from_timm(bad, PRESETS[SMALLEST].build(**dict(REDUCED, s3_depth=0)))


def test_each_converter_needs_its_architecture():
    timm_model = PRESETS[SMALLEST].build()
    with pytest.raises(ConversionError, match=r"from_vit_pytorch: expected a TwinsSVT with patch_norm=True.*"
                       r"received patch_norm=False, qkv_bias=True, norm_epsilon=1e-06"):  # fmt: skip
        from_vit_pytorch({}, timm_model)
    with pytest.raises(
        ConversionError, match=r"from_vit_pytorch: expected .*dim_head=64.*received s1_heads=2"
    ):
        from_vit_pytorch({}, TwinsSVT(num_classes=10, s1_heads=2))
    with pytest.raises(ConversionError, match=r"from_timm: expected a TwinsSVT with patch_norm=False.*received "
                       r"patch_norm=True, qkv_bias=False, norm_epsilon=1e-05, spatial_reduction=False"):  # fmt: skip
        from_timm({}, TwinsSVT(num_classes=10))


def test_timm_architecture_layout_and_sizes():
    """timm's Twins-SVT: a convolutional patch embedding without LayerNorm before it, biased
    q/k/v, the PEG inside the first block (between its halves), local attention in stage 4,
    spatial reduction (convolution and LayerNorm) where the stride is above 1, a final norm;
    padded windows take any multiple of 32 from 32 on."""
    model = PRESETS[SMALLEST].build(**REDUCED)
    assert model.input_sizes() == InputSizes(32, 32)
    assert model.clone(pad_windows=False, image_size=None).input_sizes() == InputSizes(224, 224)
    params = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())["params"]
    assert set(params) == {"stages_0", "stages_1", "stages_2", "stages_3", "norm", "to_logits"}
    stage = params["stages_2"]
    assert set(stage) == {"patch_embedding", "first_transformer", "transformer"}
    assert set(stage["patch_embedding"]) == {"proj", "norm"}
    assert stage["patch_embedding"]["proj"]["kernel"].shape == (2 * 2 * 128, 256)
    first = stage["first_transformer"]["layers_0"]
    assert set(first) == {"local_attn", "ff1", "peg", "global_attn", "ff2"}
    assert set(stage["transformer"]["layers_0"]) == {"local_attn", "ff1", "global_attn", "ff2"}
    assert "transformer" not in params["stages_3"]  # s4_depth=0
    assert first["local_attn"]["to_q"]["bias"].shape == (256,)  # 8 heads of 32
    assert first["local_attn"]["to_kv"]["kernel"].shape == (256, 512)
    assert set(first["global_attn"]) == {"norm", "to_q", "reduce", "reduce_norm", "to_kv", "to_out"}
    assert first["global_attn"]["reduce"]["kernel"].shape == (2, 2, 256, 256)
    last = params["stages_3"]["first_transformer"]["layers_0"]
    assert set(last) == {"local_attn", "ff1", "peg", "global_attn", "ff2"}
    assert set(last["global_attn"]) == {"norm", "to_q", "to_kv", "to_out"}  # stride 1: no reduction
    # 32 px: maps 8, 4, 2, 1, each padded to one 7 x 7 window; the feature maps are the stages'
    features = jax.eval_shape(
        lambda v, x: model.apply(v, x, return_features=True), {"params": params}, model.sample_input(2)
    )
    assert [f.shape for f in features] == [(2, 8, 8, 64), (2, 4, 4, 128), (2, 2, 2, 256), (2, 1, 1, 512)]
