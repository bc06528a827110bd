"""The pretrained PiT presets against timm: configurations, converted weights, loading through
the registry (local file and the Hub's cache), and adaptation at load."""

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pit_flax import PRESETS, PiT, from_timm, from_vit_pytorch
from pit_flax.pit import PatchPositionEmbedding

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
    random_variables,
    sample_images,
    timm_features,
)
from vit_layers_flax.testing.readme import run_readme_usage

README = Path(__file__).parents[1] / "README.md"
parity = pytest.mark.parity
#: the presets checked in CI (the distilled twin too, loaded from a file: see
#: test_create_model_from_a_file_matches_timm); ``nox -s pretrained_parity``
#: (VIT_FLAX_ALL_PRESETS=1) checks all
CI_PRESETS = {"pit_ti_224"}
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"
DISTILLED = "pit_ti_distilled_224"


def test_list_models_lists_the_8_presets():
    assert set(list_models("pit_*")) == set(PRESETS)
    assert len(PRESETS) == 8
    assert sum("_distilled_" in name for name in PRESETS) == 4
    assert list_models("pit_ti_*", pretrained=True) == ["pit_ti_224.in1k", "pit_ti_distilled_224.in1k"]


@parity
def test_presets_are_timms():
    """Every preset: timm's architecture (sizes, and the same parameter count), every weight
    tag timm lists, default first, with timm's pretrained configuration."""
    timm = pytest.importorskip("timm")
    import torch

    check_timm_pretrained_configs(PRESETS, "pit_*")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            reference = timm.create_model(name, pretrained=False)
        model = preset.build(scan=True)
        conv = reference.patch_embed.conv
        assert (model.patch_size, model.patch_size // 2, model.image_size) == (
            conv.kernel_size[0],
            conv.stride[0],
            reference.patch_embed.img_size[0],
        )
        assert model.class_tokens == reference.num_tokens and model.distilled == (reference.num_tokens == 2)
        stages = [
            (s.blocks[0].attn.qkv.in_features, len(s.blocks), s.blocks[0].attn.num_heads,
             s.blocks[0].mlp.fc1.out_features)
            for s in reference.transformers
        ]  # fmt: skip
        assert [tuple(s) for s in model.stages] == stages, name
        assert all(s.blocks[0].attn.head_dim == model.dim_head for s in reference.transformers)
        assert reference.norm.eps == reference.transformers[0].blocks[0].norm1.eps == model.norm_epsilon
        shapes = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())
        assert sum(x.size for x in jax.tree.leaves(shapes)) == sum(p.numel() for p in reference.parameters())


@parity
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_logits_match_timm(name):
    """Converted weights of every preset (PiT-Ti in CI) give timm's float32 eval logits at
    the preset's input size (the stacked layout of ``scan=True``)."""
    if name not in CI_PRESETS and not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    pytest.importorskip("timm")
    reference = build_timm_reference(name)
    model = PRESETS[name].build(scan=True, num_classes=reference.num_classes)
    variables = from_timm(numpy_state_dict(reference), model)
    images = sample_images(model)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=name)


@pytest.fixture(scope="module")
def distilled_file(tmp_path_factory):
    """A perturbed distilled PiT-Ti, its safetensors file and timm's model of it."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    pytest.importorskip("timm")
    reference = build_timm_reference(DISTILLED, seed=1)
    weights = numpy_state_dict(reference)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path))
    return path, weights, reference


@parity
def test_create_model_from_a_file_matches_timm(distilled_file):
    """The distilled PiT-Ti from a safetensors file: timm's logits at 224 x 224 (CI's check of
    the distilled preset)."""
    path, _, reference = distilled_file
    model, variables = create_model(DISTILLED, pretrained=path, scan=True)
    assert model.num_classes == 1000 and model.distilled
    images = sample_images(model)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=f"{DISTILLED}/file")


@parity
@pytest.mark.parametrize("channels", [1, 5])
def test_other_size_classes_and_channels_load_as_timm_loads_them(distilled_file, channels, tmp_path):
    """``image_size=64`` resamples the position embedding, ``channels`` adapts the patch
    projection, ``num_classes=10`` gives new heads, as timm does: its model built with
    ``img_size``/``in_chans``/``num_classes`` and loaded from the same file, the position
    embedding resampled by timm's ``resample_abs_pos_embed`` first (timm's PiT loader does not
    resample it: it refuses another image size). The same pooled features; every parameter
    but the heads' the checkpoint's."""
    path, state_dict, _ = distilled_file
    timm = pytest.importorskip("timm")
    import torch
    from safetensors.numpy import save_file
    from timm.layers import resample_abs_pos_embed

    grid = (64 - 16) // 8 + 1
    pos = torch.from_numpy(state_dict["pos_embed"])  # (1, dim, 27, 27)
    dim, old = pos.shape[1], tuple(pos.shape[2:])
    pos = resample_abs_pos_embed(pos.flatten(2).transpose(1, 2), (grid, grid), old, num_prefix_tokens=0)
    resampled = dict(state_dict, pos_embed=pos.transpose(1, 2).reshape(1, dim, grid, grid).numpy())
    save_file({k: np.ascontiguousarray(v) for k, v in resampled.items()}, str(tmp_path / "64.safetensors"))
    reference = timm.create_model(
        DISTILLED,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "64.safetensors")},
        img_size=64,
        in_chans=channels,
        num_classes=10,
    ).eval()
    model, variables = create_model(
        DISTILLED,
        pretrained=path,
        num_classes=10,
        image_size=64,
        channels=channels,
        rng=jax.random.key(3),
        scan=True,
    )
    images = sample_images(model)
    features = jax.jit(lambda v, x: model.apply(v, x, pre_logits=True))(variables, images)
    theirs = timm_features(reference, images, pre_logits=True)
    assert_parity(features, theirs, suite="timm", case=f"{DISTILLED}/64px/{channels}ch/pre_logits")
    params = variables["params"]
    assert (
        params["mlp_head"]["fc"]["kernel"].shape == params["mlp_head"]["fc_dist"]["kernel"].shape == (256, 10)
    )
    assert params["embedding"]["pos_embedding"].shape == (grid * grid, 64)
    np.testing.assert_array_equal(params["embedding"]["cls_token"], state_dict["cls_token"][0])
    np.testing.assert_array_equal(  # scan=True: the stage's blocks stacked
        params["stages_1"]["layers"]["ff"]["fc1"]["kernel"][3],
        state_dict["transformers.1.blocks.3.mlp.fc1.weight"].T,
    )
    np.testing.assert_array_equal(params["mlp_head"]["norm"]["scale"], state_dict["norm.weight"])


def timm_state_dict(model, variables):
    """Our variables of a timm-architecture PiT in timm's names (the inverse of from_timm)."""
    params = variables["params"]
    p, dim, side = model.patch_size, model.dim, model.grid_sides[0]
    embedding, head = params["embedding"], params["mlp_head"]
    sd = {
        "patch_embed.conv.weight": np.asarray(params["to_patch_embedding"]["kernel"]).T.reshape(
            dim, model.channels, p, p
        ),
        "patch_embed.conv.bias": params["to_patch_embedding"]["bias"],
        "cls_token": embedding["cls_token"][None],
        "pos_embed": np.asarray(embedding["pos_embedding"]).reshape(1, side, side, dim).transpose(0, 3, 1, 2),
        "norm.weight": head["norm"]["scale"],
        "norm.bias": head["norm"]["bias"],
    }
    for ours, theirs in (("fc", "head"), ("fc_dist", "head_dist")):
        if ours in head:
            sd[f"{theirs}.weight"] = np.asarray(head[ours]["kernel"]).T
            sd[f"{theirs}.bias"] = head[ours]["bias"]
    names = {"attn/norm": "norm1", "attn/to_qkv": "attn.qkv", "attn/to_out": "attn.proj",
             "ff/norm": "norm2", "ff/fc1": "mlp.fc1", "ff/fc2": "mlp.fc2"}  # fmt: skip
    for i, stage in enumerate(model.stages):
        for j in range(stage.depth):
            block = params[f"stages_{i}"][f"layers_{j}"]
            for ours, theirs in names.items():
                layer = block[ours.split("/")[0]][ours.split("/")[1]]
                weight = np.asarray(layer["kernel"]).T if "kernel" in layer else layer["scale"]
                sd[f"transformers.{i}.blocks.{j}.{theirs}.weight"] = weight
                sd[f"transformers.{i}.blocks.{j}.{theirs}.bias"] = layer["bias"]
        if i:
            pool = params[f"pools_{i - 1}"]
            sd[f"transformers.{i}.pool.fc.weight"] = np.asarray(pool["cls_ff"]["kernel"]).T
            sd[f"transformers.{i}.pool.fc.bias"] = pool["cls_ff"]["bias"]
            sd[f"transformers.{i}.pool.conv.weight"] = np.asarray(pool["depthwise"]["kernel"]).transpose(
                3, 2, 0, 1
            )
            sd[f"transformers.{i}.pool.conv.bias"] = pool["depthwise"]["bias"]
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in sd.items()}


def preset_variables(name, seed=0, **overrides):
    """``(model, variables)`` of preset ``name`` with random values, nothing compiled."""
    model = PRESETS[name].build(**overrides)
    return model, random_variables(model, model.sample_input(), seed=seed)


def test_new_num_classes_keeps_every_other_parameter(tmp_path):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    small = dict(image_size=32, depth=(1, 1, 1))  # 3 x 3 patches, one block a stage
    base, variables = preset_variables(DISTILLED, num_classes=7, **small)
    save_file(timm_state_dict(base, variables), str(tmp_path / "model.safetensors"))
    _, adapted = create_model(DISTILLED, pretrained=tmp_path / "model.safetensors", num_classes=3, **small)
    assert adapted["params"]["mlp_head"]["fc_dist"]["kernel"].shape == (256, 3)
    flat = jax.tree_util.tree_leaves_with_path(variables)
    new = dict(jax.tree_util.tree_leaves_with_path(adapted))
    for path, value in flat:
        if "'fc'" not in jax.tree_util.keystr(path) and "'fc_dist'" not in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(new[path], value)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """``pit_ti_224``'s default weights in an offline cache; returns their variables."""
    base, variables = preset_variables("pit_ti_224", seed=2)
    offline_hub(tmp_path, monkeypatch, {"pit_ti_224": timm_state_dict(base, variables)})
    return variables


def test_readme_pretrained_usage_runs_as_written(tmp_path, monkeypatch):
    """The README's ```python hub block, against an offline cache of weights in timm's layout."""
    pytest.importorskip("safetensors")
    pytest.importorskip("huggingface_hub")
    base, variables = preset_variables("pit_ti_224", seed=4)
    offline_hub(tmp_path, monkeypatch, {"pit_ti_224": timm_state_dict(base, variables)})
    namespace = run_readme_usage(README, tag="hub")[0]
    assert namespace["logits"].shape == (2, 1000)
    assert len(namespace["list_models"]("pit_*")) == 8


def test_pretrained_true_reads_the_hub_cache(hub_cache):
    _, variables = create_model("pit_ti_224", pretrained=True)
    for (path, ours), (_, theirs) in zip(
        jax.tree_util.tree_leaves_with_path(variables),
        jax.tree_util.tree_leaves_with_path(hub_cache),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))
    with pytest.raises(Exception, match=r"offline|cache|LocalEntryNotFound"):  # not in the cache
        create_model("pit_xs_224", pretrained=True)


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model("pit_ti_224", pretrained=True)


def test_bad_names_files_and_checkpoints_raise_clear_errors(tmp_path):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    with pytest.raises(ValueError, match=r"unknown model 'pit_t_224'.*pit_ti_224"):
        create_model("pit_t_224")
    with pytest.raises(ValueError, match=r"no weights tagged 'in21k'.*in1k"):
        get_preset("pit_ti_224.in21k")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"expected a \.safetensors file or a torch state_dict"):
        create_model("pit_ti_224", pretrained=garbage)
    with pytest.raises(FileNotFoundError):
        create_model("pit_ti_224", pretrained=tmp_path / "missing.safetensors")
    base, variables = preset_variables(DISTILLED, image_size=32)
    path = tmp_path / "model.safetensors"
    save_file(timm_state_dict(base, variables), str(path))
    # a distilled PiT-Ti is not a distilled PiT-XS, nor a PiT-Ti without distillation token
    with pytest.raises(ConversionError, match=r"not a checkpoint of pit_xs_distilled_224.*expected shape"):
        create_model("pit_xs_distilled_224", pretrained=path, image_size=32)
    with pytest.raises(
        ConversionError, match=r"distilled model \(2 class tokens\), the model has distilled=False"
    ):
        create_model("pit_ti_224", pretrained=path, image_size=32)
    # PiT's overlapping patches need an image size the patch size divides
    with pytest.raises(ValueError, match="image_size 100 must be divisible by patch_size 16"):
        create_model(DISTILLED, pretrained=path, image_size=100)


def test_original_pit_names_are_read_as_timm_reads_them():
    """The original PiT checkpoints name the pools ``pools.{i}``: timm's ``transformers.{i+1}.pool``."""
    model, variables = preset_variables(DISTILLED, image_size=32)
    state_dict = {
        k.replace("transformers.1.pool.", "pools.0.").replace("transformers.2.pool.", "pools.1."): v
        for k, v in timm_state_dict(model, variables).items()
    }
    assert "pools.1.conv.weight" in state_dict
    converted = from_timm(state_dict, model)
    for (path, ours), (_, theirs) in zip(
        jax.tree_util.tree_leaves_with_path(converted),
        jax.tree_util.tree_leaves_with_path(variables),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(path))


def test_each_converter_needs_its_architecture():
    timm_model = PRESETS["pit_ti_224"].build(image_size=32)
    with pytest.raises(ConversionError, match=r"from_vit_pytorch: expected a PiT with qkv_bias=False.*"
                       r"received qkv_bias=True, norm_epsilon=1e-06"):  # fmt: skip
        from_vit_pytorch({}, timm_model)
    with pytest.raises(ConversionError, match=r"from_timm: expected a PiT with qkv_bias=True.*received "
                       r"qkv_bias=False, norm_epsilon=1e-05, pool_pointwise=True, class_token_position=True"):  # fmt: skip
        from_timm({}, timm_model.clone(qkv_bias=False, norm_epsilon=1e-5, pool_pointwise=True,
                                       class_token_position=True))  # fmt: skip


def test_timm_architecture_layout_and_distilled_heads():
    """timm's PiT: the position embedding covers the patch grid only, the pools have no 1x1
    convolution, MLPs per stage; the distillation token is widened by the pools with the class
    token, and read by a second head: the logits the mean of both heads', ``pre_logits`` and
    ``num_classes=0`` the mean of both normalised tokens; maps drop both tokens."""
    config = dict(
        PRESETS[DISTILLED].config,
        image_size=32,
        depth=(1, 1),
        heads=(2, 4),
        mlp_dim=(256, 512),
        num_classes=5,
    )
    model = PiT(**config)
    images = sample_images(model)
    variables = random_variables(model, model.sample_input(2))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes["embedding"] == {"cls_token": (2, 64), "pos_embedding": (3 * 3, 64)}
    assert set(shapes["pools_0"]) == {"cls_ff", "depthwise"}
    assert [shapes[f"stages_{i}"]["layers_0"]["ff"]["fc1"]["kernel"] for i in range(2)] == [
        (64, 256),
        (128, 512),
    ]
    assert set(shapes["mlp_head"]) == {"norm", "fc", "fc_dist"}
    head = variables["params"]["mlp_head"]
    same = {"params": {**variables["params"], "mlp_head": {**head, "fc_dist": head["fc"]}}}
    bare = {"params": {**variables["params"], "mlp_head": {"norm": head["norm"]}}}

    def run(images):
        return (
            model.apply(same, images),
            model.apply(same, images, pre_logits=True),
            model.apply(same, images, return_features=True),
            model.clone(num_classes=0).apply(bare, images),
            model.apply(variables, images),
        )

    logits, pooled, maps, features, own_heads = jax.jit(run)(images)
    np.testing.assert_allclose(
        logits, pooled @ head["fc"]["kernel"] + head["fc"]["bias"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(features, pooled, rtol=1e-6, atol=1e-6)
    assert [m.shape for m in maps] == [(2, 3, 3, 64), (2, 2, 2, 128)]
    assert not np.allclose(own_heads, logits)  # two heads of their own


def test_patch_position_embedding_leaves_the_class_tokens_alone():
    """timm's stem: position and dropout on the patch tokens; the class tokens prepended as learned."""
    tokens = jnp.ones((2, 9, 8))
    layer = PatchPositionEmbedding(2, dropout=0.5)
    variables = layer.init(jax.random.key(0), tokens)
    out = layer.apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(1)})
    params = variables["params"]
    assert out.shape == (2, 11, 8)
    np.testing.assert_array_equal(out[:, :2], jnp.broadcast_to(params["cls_token"], (2, 2, 8)))
    patches = np.asarray(out[:, 2:])
    assert (patches == 0).any()  # dropped
    kept = patches != 0
    np.testing.assert_allclose(
        patches[kept], np.broadcast_to(2 * (1 + params["pos_embedding"]), out[:, 2:].shape)[kept], rtol=1e-6
    )
