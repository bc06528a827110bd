"""The pretrained LeViT presets against timm: configurations, converted weights (timm's linear
and conv layouts), loading through the registry (local file and the Hub's cache), and
adaptation at load."""

import os
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from levit_flax import PRESETS, LeViT, drop_path, from_timm, from_vit_pytorch
from levit_flax.presets import timm_config

from vit_layers_flax import ConversionError, create_model, get_preset, list_models
from vit_layers_flax.testing import (
    assert_parity,
    build_timm_reference,
    check_timm_pretrained_configs,
    numpy_state_dict,
    offline_hub,
    timm_features,
)
from vit_layers_flax.testing.readme import run_readme_usage

README = Path(__file__).parents[1] / "README.md"
parity = pytest.mark.parity
#: the smallest preset and its conv-layout twin, checked in CI through the README's hub block
#: (test_readme_pretrained_usage_matches_timm); ``nox -s pretrained_parity``
#: (VIT_FLAX_ALL_PRESETS=1) checks all
SMALLEST, CONV_TWIN = "levit_128s", "levit_conv_128s"
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"
#: one block a stage and 32 x 32 images (maps 2, 1, 1): every layer kind, a fraction of the tracing
REDUCED = dict(image_size=32, depth=(1, 1, 1))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread while the module's tests run: its passes here are a fraction of a
    second on one, but seconds each where its thread pool competes for a busy CPU."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save(state_dict, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path))
    return path


def test_list_models_lists_the_10_presets():
    assert set(list_models("levit_*")) == set(PRESETS)
    assert len(PRESETS) == 10 and sum(name.startswith("levit_conv_") for name in PRESETS) == 5
    assert list_models("levit_*128s*", pretrained=True) == [
        "levit_128s.fb_dist_in1k",
        "levit_conv_128s.fb_dist_in1k",
    ]
    for size in ("128s", "128", "192", "256", "384"):  # one model for both layouts
        assert PRESETS[f"levit_{size}"].config == PRESETS[f"levit_conv_{size}"].config == timm_config(size)


@parity
def test_presets_are_timms(one_torch_thread):
    """Every preset: timm's architecture (stem, stages, heads, key and value widths, the
    downsampling blocks, MLPs; with VIT_FLAX_ALL_PRESETS=1 the same parameter count, which in
    CI the smallest's strict conversion implies), every weight tag timm lists, default first,
    with timm's pretrained configuration."""
    timm = pytest.importorskip("timm")
    import torch

    check_timm_pretrained_configs(PRESETS, "levit_*")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            reference = timm.create_model(name, pretrained=False)
        model = preset.build(scan=True)
        assert reference.use_conv == name.startswith("levit_conv_")
        assert model.distilled and hasattr(reference, "head_dist")
        stem = [getattr(reference.stem, f"conv{i}").linear for i in range(1, 5)]
        assert [c.out_channels for c in stem] == [*model.stem_widths, model.stage_layout[0].dim]
        assert all((c.kernel_size, c.stride, c.padding) == ((3, 3), (2, 2), (1, 1)) for c in stem)
        assert type(reference.stem.act1).__name__ == "Hardswish"
        side = model.image_size // 16
        for i, (stage, timm_stage) in enumerate(zip(model.stage_layout, reference.stages, strict=True)):
            block = timm_stage.blocks[0]
            assert (stage.dim, stage.fmap_size, stage.depth, stage.heads) == (
                reference.embed_dim[i],
                block.attn.resolution[0],
                len(timm_stage.blocks),
                block.attn.num_heads,
            ), (name, i)
            assert (block.attn.key_dim, block.attn.val_dim) == (model.dim_key, model.dim_value)
            hidden = block.mlp.ln1.bn.num_features
            assert hidden == model.mlp_mult * stage.dim
            assert type(block.attn.proj.act).__name__ == "Hardswish"
            assert stage.fmap_size == side
            side = -(-side // 2)
            if i:  # timm's stage i opens with the downsampling block closing our stage i - 1
                down, before = timm_stage.downsample, model.stage_layout[i - 1]
                attn = down.attn_downsample
                assert (
                    before.downsample_heads,
                    model.dim_key,
                    model.downsample_dim_value,
                    before.dim_out,
                ) == (
                    attn.num_heads,
                    attn.key_dim,
                    attn.val_dim,
                    stage.dim,
                ), (name, i)
                assert (
                    attn.resolution[0] == before.fmap_size and down.mlp.ln1.bn.num_features == 2 * stage.dim
                )
        if ALL_PRESETS:  # in CI the smallest's strict conversion checks every parameter's shape
            shapes = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())
            count = sum(x.size for x in jax.tree.leaves(shapes["params"]))
            assert count == sum(p.numel() for p in reference.parameters()), name


@parity
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_logits_match_timm(name, one_torch_thread):
    """Converted weights of every preset give timm's float32 eval logits at the preset's input
    size (the stacked layout of ``scan=True``). In CI the smallest's and its conv twin's are
    checked through the README's usage (test_readme_pretrained_usage_matches_timm)."""
    if not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    pytest.importorskip("timm")
    reference = build_timm_reference(name)
    model = PRESETS[name].build(scan=True, num_classes=reference.num_classes)
    variables = from_timm(numpy_state_dict(reference), model)
    images = np.asarray(jax.random.normal(jax.random.key(7), (2, 224, 224, 3), jnp.float32))
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, timm_features(reference, images), suite="timm", case=name)


def resized_biases(state_dict, timm, image_size):
    """``state_dict`` with every ``attention_biases`` table resized, by timm's
    ``resize_rel_pos_bias_table_levit``, to the maps of timm's model built for ``image_size``."""
    import torch
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_levit

    with torch.device("meta"):
        shapes = {
            k: tuple(v.shape)
            for k, v in timm.create_model(SMALLEST, img_size=image_size).state_dict().items()
        }
    out = dict(state_dict)
    for key, value in state_dict.items():
        if key.endswith("attention_biases"):
            table = resize_rel_pos_bias_table_levit(torch.from_numpy(value).T, shapes[key][::-1])
            out[key] = table.T.contiguous().numpy()
    return out


@parity
def test_readme_pretrained_usage_matches_timm(tmp_path, monkeypatch, one_torch_thread):
    """The README's ```python hub block, as written, against an offline cache of timm weights
    (CI's parity check of the presets): its LeViT-128S logits at 224 x 224 (``scan=True``) are
    timm's; the conv-layout twin, loaded from a safetensors file through the same compiled
    function, gives its timm model's; its model for 64 x 64 grayscale images (maps 4, 2, 1:
    every attention-bias table resampled; the stem fitted to one channel) gives the pooled
    features of timm's built with ``img_size=64, in_chans=1`` and loaded from the same weights,
    their tables resized by timm's ``resize_rel_pos_bias_table_levit``; every other variable
    is the weights'."""
    timm = pytest.importorskip("timm")
    pytest.importorskip("huggingface_hub")
    reference = build_timm_reference(SMALLEST, seed=1)
    weights = numpy_state_dict(reference)
    offline_hub(tmp_path / "hub", monkeypatch, {SMALLEST: weights})
    namespace = run_readme_usage(README, tag="hub")[0]
    assert len(namespace["list_models"]("levit_*")) == 10
    config = namespace["config"]
    mean, std = np.array(config.mean, np.float32), np.array(config.std, np.float32)
    images = (np.asarray(namespace["images"]) - mean) / std
    assert namespace["logits"].shape == (1, 1000)
    assert_parity(
        namespace["logits"], timm_features(reference, images), suite="timm", case=f"{SMALLEST}/readme"
    )

    conv_reference = build_timm_reference(CONV_TWIN, seed=2)
    conv_file = save(numpy_state_dict(conv_reference), tmp_path / "conv.safetensors")
    conv_model, conv_variables = create_model(CONV_TWIN, pretrained=conv_file, scan=True)
    assert conv_model == namespace["model"]  # one model for both layouts: the compiled apply serves both
    assert_parity(
        namespace["classify"](conv_variables, images),
        timm_features(conv_reference, images),
        suite="timm",
        case=f"{CONV_TWIN}/file",
    )

    small_file = save(resized_biases(weights, timm, 64), tmp_path / "64.safetensors")
    small_reference = timm.create_model(
        SMALLEST, pretrained=True, pretrained_cfg_overlay={"file": str(small_file)}, img_size=64, in_chans=1
    ).eval()
    gray = (np.asarray(namespace["gray"]) - namespace["gray_mean"]) / namespace["gray_std"]
    theirs = timm_features(small_reference, gray, pre_logits=True)
    assert_parity(namespace["features"], theirs, suite="timm", case=f"{SMALLEST}/readme/64px/1ch/pre_logits")

    small, full = namespace["backbone_variables"]["params"], namespace["variables"]["params"]
    assert small["stages_2"]["layers"]["attn"]["pos_bias"]["embedding"].shape == (4, 1, 8)  # stacked
    assert small["conv_embedding_0"]["conv"]["kernel"].shape == (3, 3, 1, 16)
    changed = ("'pos_bias'", "'conv_embedding_0']['conv'")
    small_leaves = dict(jax.tree_util.tree_leaves_with_path(namespace["backbone_variables"]))
    for path, value in jax.tree_util.tree_leaves_with_path(namespace["variables"]):
        if not any(name in jax.tree_util.keystr(path) for name in changed):
            np.testing.assert_array_equal(small_leaves[path], value, err_msg=jax.tree_util.keystr(path))
    assert full["stages_2"]["layers"]["attn"]["pos_bias"]["embedding"].shape == (4, 16, 8)

    with pytest.raises(Exception, match=r"offline|cache|LocalEntryNotFound"):  # not in the cache
        create_model("levit_192", pretrained=True)


@pytest.fixture(scope="module")
def reduced_checkpoint(one_torch_thread):
    """A perturbed timm LeViT-128S reduced to one block a stage for 32 x 32 images, and its
    state_dict."""
    pytest.importorskip("timm")
    reference = build_timm_reference(SMALLEST, seed=3, img_size=32, depth=(1, 1, 1))
    return reference, {k: v.copy() for k, v in numpy_state_dict(reference).items()}  # not torch's buffers


@parity
def test_train_mode_matches_timm(reduced_checkpoint):
    """In training (batch statistics in every BatchNorm, the heads' on the pooled features
    included) the logits, the mean of both heads', are timm's, and the running statistics
    move as timm's do."""
    if not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    import torch

    reference, state_dict = reduced_checkpoint
    model = PRESETS[SMALLEST].build(**REDUCED)
    variables = from_timm(state_dict, model)
    images = np.asarray(jax.random.normal(jax.random.key(5), (4, 32, 32, 3), jnp.float32))
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    logits, updates = train(variables, images)
    reference.train()
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    reference.eval()
    assert_parity(logits, theirs, suite="timm", case=f"{SMALLEST}/reduced/train")
    stats = updates["batch_stats"]
    buffers = {k: v.numpy() for k, v in reference.state_dict().items()}
    for ours, theirs in (
        (
            stats["stages_1"]["downsample"]["attn"]["to_v"]["norm"]["var"],
            "stages.2.downsample.attn_downsample.kv",
        ),
        (stats["distill_head_norm"]["mean"], "head_dist"),
        (stats["conv_embedding_3"]["norm"]["var"], "stem.conv4"),
    ):
        name = "running_var" if theirs != "head_dist" else "running_mean"
        expected = buffers[f"{theirs}.bn.{name}"]
        if theirs.endswith(".kv"):  # per head: 16 key then 64 value rows, 16 heads
            expected = expected.reshape(16, 16 + 64)[:, 16:].reshape(-1)
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_bad_names_sizes_and_checkpoints_raise_clear_errors(tmp_path, reduced_checkpoint):
    pytest.importorskip("safetensors")
    with pytest.raises(ValueError, match=r"unknown model 'levit_128x'.*levit_128s"):
        create_model("levit_128x")
    with pytest.raises(ValueError, match=r"no weights tagged 'in1k'.*fb_dist_in1k"):
        get_preset("levit_128s.in1k")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"expected a \.safetensors file or a torch state_dict"):
        create_model(SMALLEST, pretrained=garbage)
    with pytest.raises(FileNotFoundError):
        create_model(SMALLEST, pretrained=tmp_path / "missing.safetensors")
    _, state_dict = reduced_checkpoint
    path = save(state_dict, tmp_path / "model.safetensors")
    # the stem's stride is 16: other sizes raise at construction, before anything is read
    with pytest.raises(ValueError, match=r"image_size must be a positive multiple of 16.*received 100"):
        create_model(SMALLEST, pretrained=path, image_size=100)
    # LeViT-128S is not LeViT-128 (8 heads in stage 2, not 6), nor a model without distillation head
    with pytest.raises(
        ConversionError, match=r"not a checkpoint of levit_128.*expected 8 heads of 16 \+ 16 \+ 32 = 512 rows"
    ):
        create_model("levit_128", pretrained=path, **REDUCED)
    with pytest.raises(
        ConversionError, match=r"a distilled model \(head_dist\), the model has distilled=False"
    ):
        create_model(SMALLEST, pretrained=path, distilled=False, **REDUCED)
    model = PRESETS[SMALLEST].build(**REDUCED)
    with pytest.raises(ConversionError, match=r"num_classes=0 model has none"):
        from_timm(state_dict, model.clone(num_classes=0))
    bad = dict(state_dict, **{"stages.0.blocks.0.attn.extra": np.zeros(3, np.float32)})
    bad["stages.0.blocks.0.mlp.ln1.linear.weight"] = np.zeros((256, 128, 3), np.float32)
    with pytest.raises(ConversionError, match=r"ln1\.linear\.weight: expected shape \(out, in\)"):
        from_timm(bad, model)
    bad["stages.0.blocks.0.mlp.ln1.linear.weight"] = np.zeros((200, 128), np.float32)
    with pytest.raises(
        ConversionError,
        match=r"unexpected state_dict keys.*attn\.extra.*ff/fc1/conv/kernel: expected shape \(1, 1, 128, 256\)",
    ):
        from_timm(bad, model)


def test_a_file_loads_with_new_num_classes_into_the_smaller_model(tmp_path, reduced_checkpoint):
    """The reduced checkpoint (timm's linear layout, old checkpoints' ``attention_bias_idxs``
    buffers dropped as timm drops them) with ``num_classes=3``: new heads, every other
    variable the file's; the conv layout of the same weights converts to the same variables."""
    pytest.importorskip("safetensors")
    _, state_dict = reduced_checkpoint
    path = save(dict(state_dict, **{"stages.0.blocks.0.attn.attention_bias_idxs": np.zeros((4, 4))}),
                tmp_path / "model.safetensors")  # fmt: skip
    model, adapted = create_model(SMALLEST, pretrained=path, num_classes=3, **REDUCED)
    assert model == PRESETS[SMALLEST].build(**dict(REDUCED, num_classes=3))
    full = from_timm(state_dict, model.clone(num_classes=1000))
    assert adapted["params"]["distill_head"]["kernel"].shape == (384, 3)
    conv_layout = {
        k: v[:, :, None, None] if v.ndim == 2 and "stages." in k and k.endswith("linear.weight") else v
        for k, v in state_dict.items()
    }
    heads = ("'mlp_head']", "'distill_head']")
    conv = dict(jax.tree_util.tree_leaves_with_path(from_timm(conv_layout, model.clone(num_classes=1000))))
    new = dict(jax.tree_util.tree_leaves_with_path(adapted))
    for path, value in jax.tree_util.tree_leaves_with_path(full):
        np.testing.assert_array_equal(conv[path], value)
        if not any(name in jax.tree_util.keystr(path) for name in heads):
            np.testing.assert_array_equal(new[path], value, err_msg=jax.tree_util.keystr(path))


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model(SMALLEST, pretrained=True)


def test_each_converter_needs_its_architecture():
    timm_model = PRESETS[SMALLEST].build(**REDUCED)
    with pytest.raises(ConversionError, match=r"from_vit_pytorch: expected a LeViT with channels=3.*"
                       r"received stem_widths=\(16, 32, 64\), stem_norm=True, bias_over_scale=False"):  # fmt: skip
        from_vit_pytorch({}, timm_model)
    with pytest.raises(ConversionError, match=r"from_timm: expected a LeViT with stem_norm=True.*received "
                       r"stem_norm=False, bias_over_scale=True, attention_activation='gelu'"):  # fmt: skip
        from_timm({}, LeViT(image_size=32, num_classes=10, dim=32, depth=1, heads=2, mlp_mult=2))


def test_timm_architecture_layout():
    """timm's LeViT: a stem of bias-free convolutions with BatchNorms, bias-free BatchNorm'd
    projections and feed-forward, downsampling blocks of ``dim / dim_key`` heads with values
    ``4 * dim_key`` wide, a BatchNorm before each head (the logits, the mean of both heads',
    are checked against timm's by the parity tests)."""
    model = PRESETS[SMALLEST].build(**dict(REDUCED, num_classes=5))
    shapes = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())
    shapes = jax.tree.map(jnp.shape, shapes["params"])
    assert set(shapes) == {
        *(f"conv_embedding_{i}" for i in range(4)),
        *(f"stages_{i}" for i in range(3)),
        "mlp_head_norm",
        "mlp_head",
        "distill_head_norm",
        "distill_head",
    }
    assert shapes["conv_embedding_0"] == {
        "conv": {"kernel": (3, 3, 3, 16)},
        "norm": {"scale": (16,), "bias": (16,)},
    }
    block = shapes["stages_0"]["layers_0"]
    assert block["attn"]["to_v"]["conv"] == {"kernel": (1, 1, 128, 4 * 32)}  # 4 heads of 2 * 16
    assert block["attn"]["to_out"]["conv"] == {"kernel": (1, 1, 4 * 32, 128)}  # no bias
    assert set(block["ff"]["fc2"]) == {"conv", "norm"}
    down = shapes["stages_0"]["downsample"]["attn"]
    assert down["to_k"]["conv"]["kernel"] == (1, 1, 128, 8 * 16)  # 128 / 16 heads
    assert down["to_v"]["conv"]["kernel"] == (1, 1, 128, 8 * 64)  # values 4 * 16 wide
    assert down["pos_bias"]["embedding"] == (2 * 2, 8)
    assert shapes["mlp_head_norm"] == {"scale": (384,), "bias": (384,)}


def test_drop_path_drops_whole_samples_in_training_only():
    """``drop_path`` (the blocks' residual branches): each sample kept, scaled by ``1 / (1 - rate)``,
    or zeroed, the rng deciding; nothing dropped in evaluation."""

    class Branch(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return drop_path(0.5, x, train=train)

    x = jnp.ones((64, 2, 2, 3))
    train = jax.jit(lambda key: Branch().apply({}, x, True, rngs={"dropout": key}))
    out = np.asarray(train(jax.random.key(0)))
    per_sample = out.reshape(64, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # whole samples
    assert 10 < (per_sample[:, 0] == 0).sum() < 54
    np.testing.assert_array_equal(Branch().apply({}, x, False), x)


@parity
def test_bias_tables_resample_as_timms():
    """The attention-bias tables follow timm's ``resize_rel_pos_bias_table_levit`` to smaller
    and larger maps (the README's test checks a whole model at 64 x 64)."""
    pytest.importorskip("timm")
    import torch
    from levit_flax.convert import _attention_biases
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_levit

    from vit_layers_flax import StateDict

    rng = np.random.default_rng(0)
    for old, new in ((14, 16), (7, 4), (4, 1)):
        biases = rng.standard_normal((3, old * old)).astype(np.float32)  # timm's (heads, offsets)
        ours = _attention_biases(StateDict({"b": biases}), "b", new)["embedding"]
        theirs = resize_rel_pos_bias_table_levit(torch.from_numpy(biases).T, (new * new, 3)).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ConversionError, match=r"b: expected shape \(heads, side \* side\), received shape \(3, 15\)"
    ):
        _attention_biases(StateDict({"b": np.zeros((3, 15), np.float32)}), "b", 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stem_widths=(16, 32)), r"stem_widths must be 3 positive ints"),
        (dict(attention_activation="silu"), r"attention_activation must be one of \['gelu', 'hard_swish'\]"),
        (
            dict(downsample_heads=(8, 16, 16, 16)),
            r"downsample_heads must be an int or a tuple of at most stages=3",
        ),
        (dict(downsample_dim_value=0), r"downsample_dim_value must be None or a positive int"),
        (dict(drop_path=1.0), r"drop_path must be in \[0, 1\)"),
        (dict(channels=0), r"channels must be a positive int"),
        (dict(num_distill_classes=10), r"distilled .* and num_distill_classes .* exclude each other"),
    ],
)
def test_invalid_timm_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PRESETS[SMALLEST].build(**kwargs)
