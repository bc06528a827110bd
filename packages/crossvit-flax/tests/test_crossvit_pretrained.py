"""The pretrained CrossViT presets against timm: configurations, converted weights, loading
through the registry (local file and the Hub's cache), and adaptation at load."""

import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from crossvit_flax import PRESETS, CrossViT, from_timm, from_vit_pytorch
from crossvit_flax.convert import TIMM_OPTIONS

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
#: the preset checked in CI (and a reduced CrossViT-Ti's adaptation); ``nox -s pretrained_parity``
#: (VIT_FLAX_ALL_PRESETS=1) checks all, and a reduced dagger CrossViT-9's adaptation
CI_PRESETS = {"crossvit_tiny_240"}
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"
#: a preset's architecture at a fraction of its size: (our fields, timm's keywords)
REDUCED = (
    dict(sm_dim=32, lg_dim=64, sm_enc_heads=2, sm_enc_dim_head=16, sm_enc_mlp_dim=64, lg_enc_depth=1,
         lg_enc_heads=2, lg_enc_dim_head=32, lg_enc_mlp_dim=128, cross_attn_heads=2, depth=2),
    dict(embed_dim=[32, 64], depth=[[1, 1, 0], [1, 1, 0]], num_heads=[2, 2], mlp_ratio=[2, 2, 1]),
)  # fmt: skip


def test_list_models_lists_the_11_presets():
    assert set(list_models("crossvit_*")) == set(PRESETS)
    assert len(PRESETS) == 11
    assert sum("_dagger_" in name for name in PRESETS) == 5
    assert list_models("crossvit_15_*", pretrained=True) == [
        "crossvit_15_240.in1k",
        "crossvit_15_dagger_240.in1k",
        "crossvit_15_dagger_408.in1k",
    ]


@parity
def test_presets_are_timms():
    """Every preset: timm's architecture (sizes, image scales, and the same parameter count:
    in CI CrossViT-Ti's and dagger CrossViT-9's), every weight tag timm lists, default first,
    with timm's pretrained configuration."""
    timm = pytest.importorskip("timm")
    import torch

    check_timm_pretrained_configs(PRESETS, "crossvit_*")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            reference = timm.create_model(name, pretrained=False)
        model = preset.build(scan=True)
        assert model.image_size == reference.img_size[0] and model.depth == len(reference.blocks), name
        assert model.branch_image_sizes == tuple(s[0] for s in reference.img_size_scaled), name
        assert (model.sm_patch_size, model.lg_patch_size) == tuple(
            p.patch_size[0] for p in reference.patch_embed
        )
        assert model.multi_conv == isinstance(reference.patch_embed[0].proj, torch.nn.Sequential), name
        for i, block in enumerate(reference.blocks):
            sizes = [
                (b[0].attn.qkv.in_features, len(b), b[0].attn.num_heads, b[0].attn.head_dim, b[0].mlp.fc1.out_features)
                for b in block.blocks
            ]  # fmt: skip
            assert sizes == [
                (model.sm_dim, model.sm_enc_depth, model.sm_enc_heads, model.sm_enc_dim_head, model.sm_enc_mlp_dim),
                (model.lg_dim, model.lg_enc_depth, model.lg_enc_heads, model.lg_enc_dim_head, model.lg_enc_mlp_dim),
            ], f"{name} block {i}"  # fmt: skip
            assert [f.attn.num_heads for f in block.fusion] == [model.cross_attn_heads] * 2, name
        assert reference.norm[0].eps == reference.blocks[0].fusion[0].norm1.eps == model.norm_epsilon
        if not ALL_PRESETS and name not in CI_PRESETS | {"crossvit_9_dagger_240"}:
            continue
        shapes = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())
        assert sum(x.size for x in jax.tree.leaves(shapes)) == sum(p.numel() for p in reference.parameters())


def _save(state_dict, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path))
    return path


@parity
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_logits_match_timm(name, tmp_path):
    """Every preset (CrossViT-Ti in CI), created from a safetensors file of timm's perturbed
    weights, gives timm's float32 eval logits at the preset's input size (the stacked layout
    of ``scan=True``)."""
    if name not in CI_PRESETS and not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    pytest.importorskip("timm")
    pytest.importorskip("safetensors")
    reference = build_timm_reference(name)
    path = _save(numpy_state_dict(reference), tmp_path / "model.safetensors")
    model, variables = create_model(name, pretrained=path, scan=True)
    assert model.num_classes == 1000
    images = sample_images(model, batch=1)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=name)


@parity
@pytest.mark.parametrize(
    "name, image_size, channels", [("crossvit_tiny_240", 120, 1), ("crossvit_9_dagger_240", 360, 5)]
)
def test_other_size_classes_and_channels_load_as_timm_loads_them(name, image_size, channels, tmp_path):
    """On a reduced preset (its architecture, a fraction of its widths and depths): ``image_size``
    resamples both position embeddings (the large branch's grid at ``int(image_size * 224 /
    240)``), ``channels`` adapts the first patch convolution, ``num_classes=10`` gives new
    heads, as timm does: its model built with ``img_size``/``in_chans``/``num_classes`` and
    loaded from the same file, the position embeddings resampled by timm's
    ``resample_abs_pos_embed`` first (timm's CrossViT loader does not resample them: it refuses
    another image size). The same pooled features; every parameter but the heads' the one the
    checkpoint converts to. The file has the original checkpoints' ``pos_embed.{i}`` and
    ``cls_token.{i}`` names, which are read as timm reads them (``pos_embed_{i}``)."""
    if name not in CI_PRESETS and not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    timm = pytest.importorskip("timm")
    pytest.importorskip("safetensors")
    import torch
    from timm.layers import resample_abs_pos_embed

    ours_kw, timm_kw = REDUCED
    state_dict = numpy_state_dict(build_timm_reference(name, seed=1, **timm_kw))
    original = {k.replace("_0", ".0").replace("_1", ".1") if "_embed_" in k or "token_" in k else k: v
                for k, v in state_dict.items()}  # fmt: skip
    assert "pos_embed.1" in original and "cls_token.0" in original
    path = _save(original, tmp_path / "model.safetensors")
    model, variables = create_model(
        name,
        pretrained=path,
        num_classes=10,
        image_size=image_size,
        channels=channels,
        rng=jax.random.key(3),
        scan=True,
        **ours_kw,
    )
    resampled = dict(state_dict)
    for i, side in enumerate(model.grid_sides):
        pos = torch.from_numpy(state_dict[f"pos_embed_{i}"])
        resampled[f"pos_embed_{i}"] = resample_abs_pos_embed(pos, (side, side), num_prefix_tokens=1).numpy()
    reference = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(_save(resampled, tmp_path / "resampled.safetensors"))},
        img_size=image_size,
        in_chans=channels,
        num_classes=10,
        **timm_kw,
    ).eval()
    images = sample_images(model)
    features = jax.jit(lambda v, x: model.apply(v, x, pre_logits=True))(variables, images)
    theirs = timm_features(reference, images, pre_logits=True)
    case = f"{name}/reduced/{image_size}px/{channels}ch/pre_logits"
    assert_parity(features, theirs, suite="timm", case=case)
    # every parameter but the new heads' is the one the checkpoint converts to (nothing compiled)
    converted = from_timm(state_dict, model.clone(num_classes=1000))
    flat = dict(jax.tree_util.tree_leaves_with_path(converted))
    for key, leaf in jax.tree_util.tree_leaves_with_path(variables):
        if "fc" in jax.tree_util.keystr(key) and "mlp_head" in jax.tree_util.keystr(key):
            assert leaf.shape[-1] == 10
        else:
            np.testing.assert_array_equal(leaf, flat[key], err_msg=jax.tree_util.keystr(key))


def timm_state_dict(model, variables):
    """Our variables of a timm-architecture CrossViT (not scanned) in timm's names (the
    inverse of from_timm at the model's own size and channels)."""
    params = variables["params"]
    sd = {}

    def linear(name, layer):
        sd[f"{name}.weight"] = np.asarray(layer["kernel"]).T
        sd[f"{name}.bias"] = layer["bias"]

    def norm(name, layer):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = layer["scale"], layer["bias"]

    for d, branch in enumerate(("sm", "lg")):
        embedder = params[f"{branch}_image_embedder"]
        dim, patch = getattr(model, f"{branch}_dim"), getattr(model, f"{branch}_patch_size")
        sd[f"cls_token_{d}"] = embedder["embedding"]["cls_token"][None]
        sd[f"pos_embed_{d}"] = embedder["embedding"]["pos_embedding"][None]
        embedding = embedder["to_patch_embedding"]
        if model.multi_conv:
            for i in range(3):
                conv = embedding[f"conv_{i}"]
                sd[f"patch_embed.{d}.proj.{2 * i}.weight"] = np.asarray(conv["kernel"]).transpose(3, 2, 0, 1)
                sd[f"patch_embed.{d}.proj.{2 * i}.bias"] = conv["bias"]
        else:
            kernel = np.asarray(embedding["proj"]["kernel"]).reshape(patch, patch, model.channels, dim)
            sd[f"patch_embed.{d}.proj.weight"] = kernel.transpose(3, 2, 0, 1)
            sd[f"patch_embed.{d}.proj.bias"] = embedding["proj"]["bias"]
        norm(f"norm.{d}", params[f"{branch}_mlp_head"]["norm"])
        if "fc" in params[f"{branch}_mlp_head"]:
            linear(f"head.{d}", params[f"{branch}_mlp_head"]["fc"])
    names = {("attn", "norm"): "norm1", ("attn", "to_qkv"): "attn.qkv", ("attn", "to_out"): "attn.proj",
             ("ff", "norm"): "norm2", ("ff", "fc1"): "mlp.fc1", ("ff", "fc2"): "mlp.fc2"}  # fmt: skip
    for i in range(model.depth):
        layer = params["multi_scale_encoder"][f"layers_{i}"]
        for d, branch in enumerate(("sm", "lg")):
            for j in range(getattr(model, f"{branch}_enc_depth")):
                block = layer[f"{branch}_enc"][f"layers_{j}"]
                for (part, name), theirs in names.items():
                    (norm if name == "norm" else linear)(
                        f"blocks.{i}.blocks.{d}.{j}.{theirs}", block[part][name]
                    )
            fusion = layer["cross_attend"]["layers_0"][("sm_attend_lg", "lg_attend_sm")[d]]
            norm(f"blocks.{i}.projs.{d}.0", fusion["project_in"]["norm"])
            linear(f"blocks.{i}.projs.{d}.2", fusion["project_in"]["fc"])
            norm(f"blocks.{i}.fusion.{d}.norm1", fusion["norm"])
            linear(f"blocks.{i}.fusion.{d}.attn.wq", fusion["to_q"])
            kernel, bias = (
                np.split(np.asarray(fusion["to_kv"]["kernel"]), 2, 1),
                np.split(fusion["to_kv"]["bias"], 2),
            )
            for k, name in enumerate(("wk", "wv")):
                linear(f"blocks.{i}.fusion.{d}.attn.{name}", {"kernel": kernel[k], "bias": bias[k]})
            linear(f"blocks.{i}.fusion.{d}.attn.proj", fusion["to_out"])
            norm(f"blocks.{i}.revert_projs.{d}.0", fusion["project_out"]["norm"])
            linear(f"blocks.{i}.revert_projs.{d}.2", fusion["project_out"]["fc"])
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in sd.items()}


def preset_variables(name, seed=0, **overrides):
    """``(model, variables)`` of preset ``name`` with random values, nothing compiled."""
    model = PRESETS[name].build(**overrides)
    return model, random_variables(model, model.sample_input(), seed=seed)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """CrossViT-Ti's weights (random, in timm's layout) in an offline Hugging Face cache."""
    pytest.importorskip("safetensors")
    pytest.importorskip("huggingface_hub")
    base, variables = preset_variables("crossvit_tiny_240", seed=4)
    offline_hub(tmp_path, monkeypatch, {"crossvit_tiny_240": timm_state_dict(base, variables)})
    return variables


def test_readme_pretrained_usage_runs_as_written(hub_cache):
    """The README's ```python hub block, against an offline cache of weights in timm's layout:
    the fine-tuning model has new heads, resampled position embeddings, the rest loaded."""
    namespace = run_readme_usage(README, tag="hub")[0]
    assert namespace["logits"].shape == (1, 1000)
    assert len(namespace["list_models"]("crossvit_*")) == 11
    params, loaded = namespace["params"], hub_cache["params"]
    assert namespace["model"].grid_sides == (10, 7)  # 120 px and int(120 * 224 / 240) = 112 px
    assert params["sm_mlp_head"]["fc"]["kernel"].shape == (96, 10)
    assert params["lg_image_embedder"]["embedding"]["pos_embedding"].shape == (1 + 7 * 7, 192)
    np.testing.assert_array_equal(
        params["lg_mlp_head"]["norm"]["scale"], loaded["lg_mlp_head"]["norm"]["scale"]
    )


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model("crossvit_tiny_240", pretrained=True)


def test_wrong_checkpoints_and_sizes_are_refused(tmp_path):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    assert get_preset("crossvit_tiny_240") == (PRESETS["crossvit_tiny_240"], "in1k")
    base, variables = preset_variables("crossvit_9_dagger_240", **REDUCED[0])
    state_dict = timm_state_dict(base, variables)
    for (key, ours), (_, theirs) in zip(  # the inverse is one: from_timm reads every variable back
        jax.tree_util.tree_leaves_with_path(from_timm(state_dict, base)),
        jax.tree_util.tree_leaves_with_path(variables),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs, err_msg=jax.tree_util.keystr(key))
    path = tmp_path / "model.safetensors"
    save_file(state_dict, str(path))
    # a dagger model is not one with a convolution per patch embedding; nor another size
    with pytest.raises(
        ConversionError, match=r"multi_conv \(dagger\) CrossViT, the model has multi_conv=False"
    ):
        create_model("crossvit_9_240", pretrained=path, **REDUCED[0])
    with pytest.raises(ConversionError, match=r"not a checkpoint of crossvit_15_dagger_240.*expected shape"):
        create_model("crossvit_15_dagger_240", pretrained=path)
    # both branches' images must divide into patches: 100 px is not 12-pixel patches (small
    # branch), int(240 * 384 / 408) = 225 px not 16-pixel ones (large branch)
    with pytest.raises(ValueError, match=r"image_size 100 must be divisible by sm_patch_size 12"):
        create_model("crossvit_9_dagger_240", pretrained=path, image_size=100, **REDUCED[0])
    with pytest.raises(ValueError, match=r"image_size 240 scaled by 0.941176 \(225, rounded down\) must be "
                       r"divisible by lg_patch_size 16"):  # fmt: skip
        create_model("crossvit_15_dagger_408", image_size=240)
    with pytest.raises(FileNotFoundError):
        create_model("crossvit_tiny_240", pretrained=tmp_path / "missing.safetensors")


def test_each_converter_needs_its_architecture():
    timm_model = PRESETS["crossvit_tiny_240"].build()
    with pytest.raises(ConversionError, match=r"from_vit_pytorch: expected a CrossViT with image_scales=\(1.0, 1.0\)"
                       r".*received image_scales=\(1.0, 0.9333333333333333\), patch_norms=False"):  # fmt: skip
        from_vit_pytorch({}, timm_model)
    vit_pytorch_model = CrossViT(**{**PRESETS["crossvit_tiny_240"].config, **{k: CrossViT.__dataclass_fields__[k].default for k in TIMM_OPTIONS}})  # fmt: skip
    with pytest.raises(ConversionError, match=r"from_timm: expected a CrossViT with patch_norms=False.*received "
                       r"patch_norms=True, qkv_bias=False, norm_epsilon=1e-05, encoder_norms=True"):  # fmt: skip
        from_timm({}, vit_pytorch_model)


def test_multi_conv_needs_timms_patch_sizes():
    config = dict(PRESETS["crossvit_9_dagger_240"].config)
    with pytest.raises(
        ValueError, match=r"multi_conv=True .* patch sizes \(12, 16\), received sm_patch_size=8"
    ):
        CrossViT(**{**config, "sm_patch_size": 8})
    with pytest.raises(ValueError, match="set patch_norms=False"):
        CrossViT(**{**config, "patch_norms": True})
