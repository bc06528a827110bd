"""The pretrained ViT and DeiT presets against timm: configurations, converted weights, loading
through the registry (local file and the Hub's cache), and adaptation at load."""

import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from vision_transformer_flax import PRESETS, ViT, from_timm

from vit_layers_flax import (
    ConversionError,
    create_model,
    get_preset,
    list_models,
)
from vit_layers_flax.testing import (
    assert_parity,
    build_timm_reference,
    check_timm_pretrained_configs,
    numpy_state_dict,
    offline_hub,
    sample_images,
    timm_features,
)
from vit_layers_flax.testing.readme import run_readme_usage

README = Path(__file__).parents[1] / "README.md"
parity = pytest.mark.parity
#: the presets checked in CI; ``nox -s pretrained_parity`` (VIT_FLAX_ALL_PRESETS=1) checks all
CI_PRESETS = {name for name in PRESETS if "_tiny_" in name or "_small_" in name}
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"


def test_list_models_lists_the_25_presets():
    assert set(list_models("vit_*")) | set(list_models("deit_*")) >= set(PRESETS)
    assert len(PRESETS) == 25
    assert sum(name.startswith("deit_") for name in PRESETS) == 8
    assert "vit_small_patch16_224.augreg_in21k_ft_in1k" in list_models("vit_small_*", pretrained=True)


@parity
def test_presets_are_timms():
    """Every preset: timm's architecture, every weight tag timm lists, default first, with
    timm's pretrained configuration."""
    timm = pytest.importorskip("timm")
    import torch

    check_timm_pretrained_configs(PRESETS, None)
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            reference = timm.create_model(name, pretrained=False)
        model = preset.build()
        block = reference.blocks[0]
        assert (model.dim, model.depth, model.heads, model.mlp_dim) == (
            reference.embed_dim,
            len(reference.blocks),
            block.attn.num_heads,
            block.mlp.fc1.out_features,
        )
        assert (model.patch_size, model.image_size) == (
            reference.patch_embed.patch_size[0],
            reference.patch_embed.img_size[0],
        )
        assert model.distilled == (reference.num_prefix_tokens == 2)
        assert block.norm1.eps == model.norm_epsilon


@parity
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_logits_match_timm(name):
    """Converted weights of every preset (tiny and small in CI) give timm's float32 eval
    logits at the preset's input size (the stacked layout of ``scan=True``)."""
    if name not in CI_PRESETS and not ALL_PRESETS:
        pytest.skip("a base, large or huge preset: nox -s pretrained_parity runs it")
    pytest.importorskip("timm")
    reference = build_timm_reference(name)
    model = PRESETS[name].build(scan=True, num_classes=reference.num_classes)
    variables = from_timm(numpy_state_dict(reference), model)
    images = sample_images(model)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=name)


@pytest.fixture(scope="module")
def deit_file(tmp_path_factory):
    """A perturbed distilled DeiT-tiny, its safetensors file and timm's model of it."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    pytest.importorskip("timm")
    reference = build_timm_reference("deit_tiny_distilled_patch16_224", seed=1)
    weights = numpy_state_dict(reference)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path))
    return path, weights, reference


@parity
def test_create_model_from_a_file_matches_timm(deit_file):
    path, _, reference = deit_file
    model, variables = create_model("deit_tiny_distilled_patch16_224", pretrained=path, scan=True)
    assert model.num_classes == 1000 and model.distilled
    images = sample_images(model)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case="deit_tiny_distilled/file")


@parity
@pytest.mark.parametrize("channels", [3, 1, 5])
def test_other_size_classes_and_channels_load_as_timm_loads_them(deit_file, channels):
    """``image_size=96`` resamples the position embedding, ``channels`` adapts the patch
    projection, as timm's loader does (its model built with ``img_size``/``in_chans`` and loaded
    from the same file): the same pooled features. ``num_classes=10``: a new head, every other
    parameter the checkpoint's."""
    path, state_dict, _ = deit_file
    timm = pytest.importorskip("timm")
    reference = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        img_size=96,
        in_chans=channels,
        num_classes=10,
    ).eval()
    model, variables = create_model(
        "deit_tiny_distilled_patch16_224",
        pretrained=path,
        num_classes=10,
        image_size=96,
        channels=channels,
        rng=jax.random.key(3),
    )
    images = sample_images(model)
    features = jax.jit(lambda v, x: model.apply(v, x, pre_logits=True))(variables, images)
    theirs = timm_features(reference, images, pre_logits=True)
    assert_parity(features, theirs, suite="timm", case=f"deit_tiny_distilled/96px/{channels}ch/pre_logits")
    params = variables["params"]
    assert params["mlp_head"]["kernel"].shape == params["head_dist"]["kernel"].shape == (192, 10)
    np.testing.assert_array_equal(params["embedding"]["pos_embedding"][:2], state_dict["pos_embed"][0, :2])
    np.testing.assert_array_equal(
        params["transformer"]["layers_3"]["ff"]["fc1"]["kernel"], state_dict["blocks.3.mlp.fc1.weight"].T
    )
    np.testing.assert_array_equal(params["transformer"]["norm"]["scale"], state_dict["norm.weight"])


def test_new_num_classes_keeps_every_other_parameter(tmp_path):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    base, variables = create_model("vit_tiny_patch16_224", num_classes=7, rng=jax.random.key(1))
    # the checkpoint of a 7-class model, in timm's layout, written from our own variables
    state_dict = timm_state_dict(base, variables)
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    _, adapted = create_model(
        "vit_tiny_patch16_224", pretrained=tmp_path / "model.safetensors", num_classes=3
    )
    assert adapted["params"]["mlp_head"]["kernel"].shape == (192, 3)
    flat = jax.tree_util.tree_leaves_with_path(variables)
    new = dict(jax.tree_util.tree_leaves_with_path(adapted))
    for path, value in flat:
        if "mlp_head" not in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(new[path], value)


def timm_state_dict(model, variables):
    """Our variables of a timm-architecture ViT in timm's names (the inverse of from_timm)."""
    params = variables["params"]
    p, dim = model.patch_size, model.dim
    sd = {
        "patch_embed.proj.weight": np.asarray(params["to_patch_embedding"]["proj"]["kernel"])
        .reshape(p, p, model.channels, dim)
        .transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": params["to_patch_embedding"]["proj"]["bias"],
        "cls_token": params["embedding"]["cls_token"][None],
        "pos_embed": params["embedding"]["pos_embedding"][None],
        "norm.weight": params["transformer"]["norm"]["scale"],
        "norm.bias": params["transformer"]["norm"]["bias"],
        "head.weight": np.asarray(params["mlp_head"]["kernel"]).T,
        "head.bias": params["mlp_head"]["bias"],
    }
    names = {
        "attn/norm": "norm1",
        "attn/to_qkv": "attn.qkv",
        "attn/to_out": "attn.proj",
        "ff/norm": "norm2",
        "ff/fc1": "mlp.fc1",
        "ff/fc2": "mlp.fc2",
    }
    for i in range(model.depth):
        block = params["transformer"][f"layers_{i}"]
        for ours, theirs in names.items():
            layer = block[ours.split("/")[0]][ours.split("/")[1]]
            if "kernel" in layer:
                sd[f"blocks.{i}.{theirs}.weight"] = np.asarray(layer["kernel"]).T
            else:
                sd[f"blocks.{i}.{theirs}.weight"] = layer["scale"]
            sd[f"blocks.{i}.{theirs}.bias"] = layer["bias"]
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in sd.items()}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """``vit_tiny_patch16_224``'s default weights in an offline cache; returns their variables."""
    base, variables = create_model("vit_tiny_patch16_224", rng=jax.random.key(2))
    offline_hub(tmp_path, monkeypatch, {"vit_tiny_patch16_224": timm_state_dict(base, variables)})
    return variables


@parity
def test_readme_pretrained_usage_runs_as_written(tmp_path, monkeypatch):
    """The README's ```python hub block, against an offline cache of timm weights."""
    pytest.importorskip("timm")
    weights = numpy_state_dict(build_timm_reference("deit_tiny_patch16_224", seed=4))
    offline_hub(tmp_path, monkeypatch, {"deit_tiny_patch16_224": weights})
    namespace = run_readme_usage(README, tag="hub")[0]
    assert namespace["logits"].shape == (2, 1000)
    assert len(namespace["list_models"]("deit_*")) == 8


def test_pretrained_true_reads_the_hub_cache(hub_cache):
    _, variables = create_model("vit_tiny_patch16_224", pretrained=True)
    for (path, ours), (_, theirs) in zip(
        jax.tree_util.tree_leaves_with_path(variables),
        jax.tree_util.tree_leaves_with_path(hub_cache),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))
    with pytest.raises(Exception, match=r"offline|cache|LocalEntryNotFound"):  # not in the cache
        create_model("vit_tiny_patch16_384", pretrained=True)


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model("vit_tiny_patch16_224", pretrained=True)


def test_bad_names_files_and_checkpoints_raise_clear_errors(tmp_path, deit_file):
    with pytest.raises(ValueError, match=r"unknown model 'vit_tiny_patch16_225'.*vit_tiny_patch16_224"):
        create_model("vit_tiny_patch16_225")
    with pytest.raises(ValueError, match=r"no weights tagged 'in1k'.*augreg_in21k_ft_in1k"):
        get_preset("vit_tiny_patch16_224.in1k")
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"expected a \.safetensors file or a torch state_dict"):
        create_model("vit_tiny_patch16_224", pretrained=garbage)
    with pytest.raises(FileNotFoundError):
        create_model("vit_tiny_patch16_224", pretrained=tmp_path / "missing.safetensors")
    path, _, _ = deit_file  # a distilled DeiT-tiny is not a distilled DeiT-small
    with pytest.raises(ConversionError, match=r"not a checkpoint of deit_small_distilled_patch16_224.*shape"):
        create_model("deit_small_distilled_patch16_224", pretrained=path)
    with pytest.raises(
        ConversionError, match=r"distilled model \(dist_token\), the model has distilled=False"
    ):
        create_model("deit_tiny_patch16_224", pretrained=path)


def test_from_timm_needs_the_original_architecture():
    model = ViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=128)
    with pytest.raises(ConversionError, match="patch_norms=False, qkv_bias=True"):
        from_timm({}, model)


def test_distilled_heads_and_features():
    """DeiT's distillation: two prefix tokens, two heads averaged; ``pre_logits`` and
    ``num_classes=0`` give the mean of both tokens; maps drop both tokens."""
    config = dict(PRESETS["deit_tiny_distilled_patch16_224"].config, image_size=32, depth=2, num_classes=5)
    model = ViT(**config)
    images = sample_images(model)
    variables = model.init(jax.random.key(0), images)
    params = variables["params"]
    assert params["embedding"]["cls_token"].shape == (2, 192)
    assert params["embedding"]["pos_embedding"].shape == (2 + 4, 192)

    # with both heads the same, the mean of the heads' logits is the head on the mean token
    same = {"params": {**params, "head_dist": params["mlp_head"]}}

    def run(variables, images):
        logits = model.apply(variables, images)
        pooled = model.apply(variables, images, pre_logits=True)
        maps = model.apply(variables, images, return_features=True)
        bare = {"params": {k: v for k, v in params.items() if k not in ("mlp_head", "head_dist")}}
        return logits, pooled, maps, model.clone(num_classes=0).apply(bare, images)

    logits, pooled, maps, features = jax.jit(run)(same, images)
    head = params["mlp_head"]
    np.testing.assert_allclose(logits, pooled @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features, pooled, rtol=1e-6, atol=1e-6)
    assert [m.shape for m in maps] == [(2, 2, 2, 192)] * 2
    assert not np.allclose(model.apply(variables, images), logits)  # two heads of their own
    with pytest.raises(ValueError, match="distilled needs pool='cls'"):
        ViT(**{**config, "pool": "mean"})
