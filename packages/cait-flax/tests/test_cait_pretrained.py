"""The pretrained CaiT presets against timm: configurations, converted weights, loading through
the registry (local file and the Hub's cache), and adaptation at load."""

import importlib
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cait_flax import PRESETS, TIMM_ARCHITECTURE, CaiT, from_timm

from vit_layers_flax import ConversionError, create_model, get_preset, list_models
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
#: the smallest preset, checked in CI; ``nox -s pretrained_parity`` (VIT_FLAX_ALL_PRESETS=1) checks all
SMALLEST = "cait_xxs24_224"
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"


def timm_state_dict(model, variables):
    """Our variables of a timm-architecture CaiT (one block per ``layers_{i}``, no ``scan``) in
    timm's names and layout: the inverse of from_timm."""
    params = jax.tree.map(np.asarray, variables["params"])
    p, dim, inner = model.patch_size, model.dim, model.heads * model.dim_head
    head = params["mlp_head"]
    sd = {
        "patch_embed.proj.weight": params["to_patch_embedding"]["proj"]["kernel"]
        .reshape(p, p, model.channels, dim)
        .transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": params["to_patch_embedding"]["proj"]["bias"],
        "pos_embed": params["embedding"]["pos_embedding"][None],
        "cls_token": params["cls_token"][None],
        "norm.weight": head["norm"]["scale"],
        "norm.bias": head["norm"]["bias"],
    }
    if "fc" in head:
        sd["head.weight"], sd["head.bias"] = head["fc"]["kernel"].T, head["fc"]["bias"]

    def linear(name, kernel, bias):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = kernel.T, bias

    def common(prefix, block):
        attn, ff = block["attn"], block["ff"]
        sd[f"{prefix}.norm1.weight"], sd[f"{prefix}.norm1.bias"] = attn["norm"]["scale"], attn["norm"]["bias"]
        sd[f"{prefix}.norm2.weight"], sd[f"{prefix}.norm2.bias"] = ff["norm"]["scale"], ff["norm"]["bias"]
        linear(f"{prefix}.attn.proj", attn["to_out"]["kernel"], attn["to_out"]["bias"])
        linear(f"{prefix}.mlp.fc1", ff["fc1"]["kernel"], ff["fc1"]["bias"])
        linear(f"{prefix}.mlp.fc2", ff["fc2"]["kernel"], ff["fc2"]["bias"])
        sd[f"{prefix}.gamma_1"], sd[f"{prefix}.gamma_2"] = (
            block["attn_scale"]["scale"],
            block["ff_scale"]["scale"],
        )

    for i in range(model.depth):
        block, prefix = params["patch_transformer"][f"layers_{i}"], f"blocks.{i}"
        common(prefix, block)
        attn = block["attn"]
        qkv = {k: np.concatenate([attn["to_q"][k], attn["to_kv"][k]], axis=-1) for k in ("kernel", "bias")}
        linear(f"{prefix}.attn.qkv", qkv["kernel"], qkv["bias"])
        linear(f"{prefix}.attn.proj_l", attn["mix_heads_pre_attn"], attn["mix_heads_pre_attn_bias"])
        linear(f"{prefix}.attn.proj_w", attn["mix_heads_post_attn"], attn["mix_heads_post_attn_bias"])
    for i in range(model.cls_depth):
        block, prefix = params["cls_transformer"][f"layers_{i}"], f"blocks_token_only.{i}"
        common(prefix, block)
        attn = block["attn"]
        linear(f"{prefix}.attn.q", attn["to_q"]["kernel"], attn["to_q"]["bias"])
        kv = attn["to_kv"]
        linear(f"{prefix}.attn.k", kv["kernel"][:, :inner], kv["bias"][:inner])
        linear(f"{prefix}.attn.v", kv["kernel"][:, inner:], kv["bias"][inner:])
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def test_list_models_lists_the_10_presets():
    assert set(list_models("cait_*")) == set(PRESETS)
    assert len(PRESETS) == 10
    assert list_models("cait_xxs24_*", pretrained=True) == [
        "cait_xxs24_224.fb_dist_in1k",
        "cait_xxs24_384.fb_dist_in1k",
    ]


@parity
def test_presets_are_timms(monkeypatch):
    """Every preset: timm's architecture (sizes, options, parameter count, LayerScale
    initial value), every weight tag timm lists, default first, with timm's pretrained
    configuration."""
    timm = pytest.importorskip("timm")
    import torch

    cait_module = importlib.import_module("timm.models.cait")
    build, built_with = cait_module.build_model_with_cfg, {}

    def recording(cls, variant, pretrained, **kwargs):
        built_with[variant] = kwargs
        return build(cls, variant, pretrained, **kwargs)

    monkeypatch.setattr(cait_module, "build_model_with_cfg", recording)
    check_timm_pretrained_configs(PRESETS, "cait_*")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            reference = timm.create_model(name, pretrained=False)
        model = preset.build()
        block, token_block = reference.blocks[0], reference.blocks_token_only[0]
        assert (model.dim, model.depth, model.cls_depth, model.heads, model.mlp_dim) == (
            reference.embed_dim,
            len(reference.blocks),
            len(reference.blocks_token_only),
            block.attn.num_heads,
            block.mlp.fc1.out_features,
        ), name
        assert model.heads * model.dim_head == model.dim
        assert token_block.mlp.fc1.out_features == model.mlp_dim
        assert (model.patch_size, model.image_size) == (
            reference.patch_embed.patch_size[0],
            reference.patch_embed.img_size[0],
        )
        assert isinstance(reference.patch_embed.norm, torch.nn.Identity) == (not model.patch_norms)
        assert (block.attn.qkv.bias is not None, token_block.attn.q.bias is not None) == (model.qkv_bias,) * 2
        assert block.norm1.eps == token_block.norm1.eps == reference.norm.eps == model.norm_epsilon
        assert built_with[name]["init_values"] == model.layer_scale_init, name
        shapes = jax.eval_shape(model.clone(scan=True).init, jax.random.key(0), model.sample_input())
        assert sum(x.size for x in jax.tree.leaves(shapes)) == sum(p.numel() for p in reference.parameters())


@pytest.fixture(scope="module")
def cait_file(tmp_path_factory):
    """A perturbed timm CaiT-XXS24, its safetensors file and timm's model of it."""
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
    """Converted weights of every preset (the smallest in CI) give timm's float32 eval logits
    at the preset's input size (the stacked layout of ``scan=True``)."""
    if name != SMALLEST and not ALL_PRESETS:
        pytest.skip("a larger preset: nox -s pretrained_parity runs it")
    pytest.importorskip("timm")
    if name == SMALLEST:  # the file's model: one timm model built in CI, not two
        _, weights, reference = request.getfixturevalue("cait_file")
    else:
        reference = build_timm_reference(name)
        weights = numpy_state_dict(reference)
    model = PRESETS[name].build(scan=True, num_classes=reference.num_classes)
    variables = from_timm(weights, model)
    images = sample_images(model)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=name)


@parity
def test_create_model_from_a_file_is_from_timm_of_it(cait_file):
    """``pretrained=<file>``: the preset with the file's weights converted by from_timm (whose
    logits test_logits_match_timm compares with timm's model of the same file)."""
    path, weights, _ = cait_file
    model, variables = create_model(SMALLEST, pretrained=path, scan=True)
    assert model == PRESETS[SMALLEST].build(scan=True)
    expected = from_timm(weights, model)
    for (key, ours), (_, theirs) in zip(
        jax.tree_util.tree_leaves_with_path(variables),
        jax.tree_util.tree_leaves_with_path(expected),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(key))


@parity
def test_other_size_classes_and_channels_load_as_timm_loads_them(cait_file, tmp_path):
    """``image_size=96`` resamples the position embedding as timm's ``resample_abs_pos_embed``
    (timm's own CaiT loader refuses another size, so its model, built with ``img_size=96``,
    loads the file with the embedding resampled by that function), ``channels`` adapts the
    patch projection as timm's loader does (``in_chans=1``: the sum over RGB): the same
    pooled features. ``num_classes=10``: a new head, every other parameter the checkpoint's."""
    path, state_dict, _ = cait_file
    timm = pytest.importorskip("timm")
    channels = 1
    import torch
    from safetensors.numpy import save_file
    from timm.layers import resample_abs_pos_embed

    pos_embed = torch.from_numpy(state_dict["pos_embed"])
    resized = dict(
        state_dict, pos_embed=resample_abs_pos_embed(pos_embed, (6, 6), num_prefix_tokens=0).numpy()
    )
    save_file({k: np.ascontiguousarray(v) for k, v in resized.items()}, str(tmp_path / "96.safetensors"))
    reference = timm.create_model(
        SMALLEST,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "96.safetensors")},
        img_size=96,
        in_chans=channels,
        num_classes=10,
    ).eval()
    model, variables = create_model(
        SMALLEST,
        pretrained=path,
        num_classes=10,
        image_size=96,
        channels=channels,
        rng=jax.random.key(3),
        scan=True,
    )
    images = sample_images(model)
    features = jax.jit(lambda v, x: model.apply(v, x, pre_logits=True))(variables, images)
    theirs = timm_features(reference, images, pre_logits=True)
    assert_parity(features, theirs, suite="timm", case=f"{SMALLEST}/96px/{channels}ch/pre_logits")
    params = variables["params"]
    assert params["mlp_head"]["fc"]["kernel"].shape == (192, 10)
    assert params["embedding"]["pos_embedding"].shape == (36, 192)
    np.testing.assert_array_equal(
        params["patch_transformer"]["layers"]["ff"]["fc1"]["kernel"][3],
        state_dict["blocks.3.mlp.fc1.weight"].T,
    )
    np.testing.assert_array_equal(params["mlp_head"]["norm"]["scale"], state_dict["norm.weight"])


@parity
def test_more_channels_adapt_the_patch_projection_as_timm(cait_file):
    """``channels=5``: timm's ``adapt_input_conv`` (RGB repeated, scaled by 3/5), the rest as
    loaded (the forward pass with adapted channels is test_other_size_classes_and_channels...)."""
    path, state_dict, _ = cait_file
    pytest.importorskip("timm")
    import torch
    from timm.models import adapt_input_conv

    model, variables = create_model(SMALLEST, pretrained=path, channels=5, scan=True)
    weight = adapt_input_conv(5, torch.from_numpy(state_dict["patch_embed.proj.weight"])).numpy()
    kernel = variables["params"]["to_patch_embedding"]["proj"]["kernel"]
    assert kernel.shape == (16 * 16 * 5, 192) and model.channels == 5
    np.testing.assert_allclose(kernel, weight.transpose(2, 3, 1, 0).reshape(-1, 192), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def random_checkpoint():
    """Random variables of the smallest preset (no compile) and them in timm's layout."""
    model = PRESETS[SMALLEST].build()
    variables = random_variables(model, model.sample_input(), seed=2)
    return model, variables, timm_state_dict(model, variables)


def test_from_timm_inverts_the_test_writer(random_checkpoint):
    """from_timm reads back exactly what :func:`timm_state_dict` wrote (so the tests that load
    such files without torch load real timm layouts: the parity tests check the layout)."""
    model, variables, state_dict = random_checkpoint
    converted = from_timm(state_dict, model)
    for (path, ours), (_, theirs) in zip(
        jax.tree_util.tree_leaves_with_path(converted),
        jax.tree_util.tree_leaves_with_path(variables),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))


def test_new_num_classes_keeps_every_other_parameter(tmp_path, random_checkpoint):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    _, _, state_dict = random_checkpoint
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    _, adapted = create_model(SMALLEST, pretrained=tmp_path / "model.safetensors", num_classes=3, scan=True)
    assert adapted["params"]["mlp_head"]["fc"]["kernel"].shape == (192, 3)
    _, kept = create_model(SMALLEST, pretrained=tmp_path / "model.safetensors", scan=True)
    new = dict(jax.tree_util.tree_leaves_with_path(adapted))
    for path, value in jax.tree_util.tree_leaves_with_path(kept):
        if "'fc'" not in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(new[path], value)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, random_checkpoint):
    """``cait_xxs24_224``'s default weights in an offline cache; returns their variables."""
    _, variables, state_dict = random_checkpoint
    offline_hub(tmp_path, monkeypatch, {SMALLEST: state_dict})
    return variables


def test_pretrained_true_reads_the_hub_cache(hub_cache):
    _, variables = create_model(SMALLEST, pretrained=True)
    for (path, ours), (_, theirs) in zip(
        jax.tree_util.tree_leaves_with_path(variables),
        jax.tree_util.tree_leaves_with_path(hub_cache),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))
    with pytest.raises(Exception, match=r"offline|cache|LocalEntryNotFound"):  # not in the cache
        create_model("cait_xxs24_384", pretrained=True)


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model(SMALLEST, pretrained=True)


@parity
def test_readme_pretrained_usage_runs_as_written(tmp_path, monkeypatch, cait_file):
    """The README's ```python hub block, against an offline cache of timm weights."""
    _, weights, _ = cait_file
    offline_hub(tmp_path, monkeypatch, {SMALLEST: weights})
    namespace = run_readme_usage(README, tag="hub")[0]
    assert namespace["logits"].shape == (2, 1000)
    assert len(namespace["list_models"]("cait_*")) == 10


def test_bad_names_and_checkpoints_raise_clear_errors(tmp_path, random_checkpoint):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    with pytest.raises(ValueError, match=r"unknown model 'cait_xxs24_225'.*cait_xxs24_224"):
        create_model("cait_xxs24_225")
    with pytest.raises(ValueError, match=r"no weights tagged 'in1k'.*fb_dist_in1k"):
        get_preset("cait_xxs24_224.in1k")
    _, _, state_dict = random_checkpoint
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError, match=r"not a checkpoint of cait_s24_224.*shape"):
        create_model("cait_s24_224", pretrained=tmp_path / "model.safetensors")
    with pytest.raises(ConversionError, match=r"not a checkpoint of cait_xxs36_224.*no key 'blocks\.24"):
        create_model("cait_xxs36_224", pretrained=tmp_path / "model.safetensors")
    extra = dict(state_dict, **{"blocks.0.attn.extra": np.zeros(3, np.float32)})
    with pytest.raises(ConversionError, match=r"unexpected state_dict keys.*blocks\.0\.attn\.extra"):
        from_timm(extra, PRESETS[SMALLEST].build())
    bad_qkv = dict(state_dict, **{"blocks.5.attn.qkv.weight": np.zeros((3 * 192, 190), np.float32)})
    with pytest.raises(ConversionError, match=r"blocks\.5\.attn\.qkv\.weight: expected shape \(576, 192\)"):
        from_timm(bad_qkv, PRESETS[SMALLEST].build())


def test_from_timm_needs_the_papers_architecture():
    config = dict(
        image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, cls_depth=1, heads=4, mlp_dim=128
    )
    with pytest.raises(
        ConversionError,
        match=r"expected a CaiT with patch_norms=False.*cls_norm_context=True.*received patch_norms=True",
    ):
        from_timm({}, CaiT(**config, dim_head=16))
    with pytest.raises(ConversionError, match=r"heads \* dim_head == dim"):
        from_timm({}, CaiT(**config, **TIMM_ARCHITECTURE))  # dim_head 64 by default


def test_paper_options_change_the_architecture():
    """The paper's options: no patch norms, biases on q/k/v and on the head mixing, plain
    multi-head class attention reading normalised patches, one LayerScale initial value."""
    config = dict(
        image_size=16, patch_size=8, num_classes=3, dim=16, depth=2, cls_depth=1, heads=2, dim_head=8
    )
    images = jnp.zeros((1, 16, 16, 3))
    default = jax.eval_shape(CaiT(**config, mlp_dim=32).init, jax.random.key(0), images)["params"]
    model = CaiT(**config, mlp_dim=32, **TIMM_ARCHITECTURE, norm_epsilon=1e-6, layer_scale_init=1e-6)
    params = jax.jit(model.init)(jax.random.key(0), images)["params"]
    assert set(default["to_patch_embedding"]) == {"patch_norm", "proj", "norm"}
    assert set(params["to_patch_embedding"]) == {"proj"}
    patch_attn, cls_attn = (
        params["patch_transformer"]["layers_0"]["attn"],
        params["cls_transformer"]["layers_0"]["attn"],
    )
    assert set(patch_attn) == {"norm", "to_q", "to_kv", "to_out", "mix_heads_pre_attn", "mix_heads_pre_attn_bias",
                               "mix_heads_post_attn", "mix_heads_post_attn_bias"}  # fmt: skip
    assert set(cls_attn) == {"norm", "to_q", "to_kv", "to_out"}
    assert set(cls_attn["to_q"]) == {"kernel", "bias"}
    assert "bias" not in default["cls_transformer"]["layers_0"]["attn"]["to_q"]
    for stack in ("patch_transformer", "cls_transformer"):
        for layer in params[stack].values():
            np.testing.assert_array_equal(layer["attn_scale"]["scale"], np.full(16, 1e-6, np.float32))
    with pytest.raises(ValueError, match="layer_scale_init must be None or >= 0"):
        CaiT(**config, mlp_dim=32, layer_scale_init=-1.0)
