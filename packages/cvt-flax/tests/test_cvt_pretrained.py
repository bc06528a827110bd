"""The pretrained CvT presets against Hugging Face transformers' ``CvtForImageClassification``:
configurations, converted weights, loading through the registry (local torch file and the
Hub's cache), and adaptation at load."""

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cvt_flax import PRESETS, CvT, from_transformers, from_vit_pytorch

from vit_layers_flax import ConversionError, create_model, get_preset, list_models
from vit_layers_flax.testing import (
    assert_parity,
    numpy_state_dict,
    offline_hub,
    perturb,
    random_variables,
    sample_images,
)
from vit_layers_flax.testing.readme import run_readme_usage

README = Path(__file__).parents[1] / "README.md"
parity = pytest.mark.parity
#: one worker runs the module under pytest-xdist: transformers is imported (seconds) once
pytestmark = pytest.mark.xdist_group("cvt_pretrained")
#: the smallest preset, checked in CI (at 224 x 224 through the README's hub block, see
#: test_readme_pretrained_usage_matches_transformers); ``nox -s pretrained_parity``
#: (VIT_FLAX_ALL_PRESETS=1) checks all at their input sizes
SMALLEST = "cvt_13"
ALL_PRESETS = os.environ.get("VIT_FLAX_ALL_PRESETS") == "1"

#: transformers' ``CvtConfig`` of each size: its defaults (CvT-13's sizes, 7/3/3 embeddings of
#: stride 4/2/2 and padding 2/1/1, 3 x 3 "dw_bn" projections, keys and values of stride 2,
#: biased q/k/v projections, MLP ratio 4, a class token in the last stage) with the depths,
#: widths and heads transformers' conversion script gives each checkpoint
HF_SIZES = {
    "13": dict(depth=[1, 2, 10]),
    "21": dict(depth=[1, 4, 16]),
    "w24": dict(depth=[2, 2, 20], embed_dim=[192, 768, 1024], num_heads=[3, 12, 16]),
}


def hf_config(name, **overrides):
    """transformers' ``CvtConfig`` of preset ``name`` (1000 ImageNet-1k labels, as every checkpoint)."""
    from transformers import CvtConfig

    return CvtConfig(**{"num_labels": 1000, **HF_SIZES[name.split("_")[1]], **overrides})


def build_hf_reference(name, *, seed=0, **overrides):
    """``CvtForImageClassification`` of preset ``name``, random weights perturbed (no download)."""
    import torch
    from transformers import CvtForImageClassification

    torch.manual_seed(seed)
    return perturb(CvtForImageClassification(hf_config(name, **overrides)), seed=seed + 1)


def hf_outputs(reference, images_nhwc, *, pre_logits=False):
    """The reference's logits (or, with ``pre_logits``, what its classifier reads) of NHWC images.
    Without a class token its head is run here, as its forward writes it (transformers 5.18's
    forward then fails: ``outputs[1]`` of a ``BaseModelOutputWithCLSToken`` without one)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.array(images_nhwc).transpose(0, 3, 1, 2)))
        if not pre_logits and reference.config.cls_token[-1]:
            return reference(x).logits.numpy()
        out = reference.cvt(x)
        if reference.config.cls_token[-1]:
            pooled = reference.layernorm(out.cls_token_value).mean(1)
        else:
            pooled = reference.layernorm(out.last_hidden_state.flatten(2).transpose(1, 2)).mean(1)
        return (pooled if pre_logits else reference.classifier(pooled)).numpy()


def hf_state_dict(model, variables):
    """Our variables of an original-architecture CvT (one block per ``layers_{i}``, no ``scan``)
    in transformers' names and layout: the inverse of from_transformers."""
    params = jax.tree.map(np.asarray, variables["params"])
    stats = jax.tree.map(np.asarray, variables.get("batch_stats", {}))
    sd = {}

    def linear(name, layer):
        sd[f"{name}.weight"] = layer["kernel"].T
        if "bias" in layer:
            sd[f"{name}.bias"] = layer["bias"]

    def norm(name, layer):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = layer["scale"], layer["bias"]

    for s in range(3):
        stage, prefix = params[f"stages_{s}"], f"cvt.encoder.stages.{s}"
        embedding = f"{prefix}.embedding.convolution_embeddings"
        sd[f"{embedding}.projection.weight"] = stage["conv"]["kernel"].transpose(3, 2, 0, 1)
        sd[f"{embedding}.projection.bias"] = stage["conv"]["bias"]
        norm(f"{embedding}.normalization", stage["norm"])
        if "cls_token" in stage:
            sd[f"{prefix}.cls_token"] = stage["cls_token"][None]
        for i in range(model.stage_config(s + 1)["depth"]):
            block, layer = stage["transformer"][f"layers_{i}"], f"{prefix}.layers.{i}"
            block_stats = stats[f"stages_{s}"]["transformer"][f"layers_{i}"]["attn"]
            norm(f"{layer}.layernorm_before", block["attn"]["norm"])
            for ours, theirs in (("to_q", "query"), ("to_k", "key"), ("to_v", "value")):
                projection = block["attn"][ours]
                conv = f"{layer}.attention.attention.convolution_projection_{theirs}.convolution_projection"
                sd[f"{conv}.convolution.weight"] = projection["depthwise"]["kernel"].transpose(3, 2, 0, 1)
                norm(f"{conv}.normalization", projection["bn"])
                sd[f"{conv}.normalization.running_mean"] = block_stats[ours]["bn"]["mean"]
                sd[f"{conv}.normalization.running_var"] = block_stats[ours]["bn"]["var"]
                linear(f"{layer}.attention.attention.projection_{theirs}", projection["pointwise"])
            linear(f"{layer}.attention.output.dense", block["attn"]["to_out"])
            norm(f"{layer}.layernorm_after", block["ff"]["norm"])
            linear(f"{layer}.intermediate.dense", block["ff"]["fc1"])
            linear(f"{layer}.output.dense", block["ff"]["fc2"])
    norm("layernorm", params["norm"])
    if "to_logits" in params:
        linear("classifier", params["to_logits"])
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def save_torch(state_dict, path):
    """``state_dict`` written as the published files are: a torch checkpoint."""
    import torch

    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}, path)
    return path


def assert_same_variables(ours, theirs, skip=()):
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves_with_path(theirs), strict=True
    ):
        if not any(name in jax.tree_util.keystr(path) for name in skip):
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_list_models_lists_the_7_presets():
    assert set(list_models("cvt_*")) == set(PRESETS)
    assert len(PRESETS) == 7
    assert list_models("cvt_13*", pretrained=True) == [
        "cvt_13.in1k",
        "cvt_13_384.in1k",
        "cvt_13_384_22k.in22k_ft_in1k",
    ]
    assert list_models("cvt_w24*", pretrained=True) == ["cvt_w24_384_22k.in22k_ft_in1k"]


@parity
def test_presets_are_transformers():
    """Every preset: transformers' ``CvtConfig`` of its checkpoint (every stage size, the
    embedding and projection convolutions, heads of 64 channels, MLP ratio, q/k/v biases, the
    class token) and the same parameter count (CvT-13's in CI, all with
    VIT_FLAX_ALL_PRESETS=1); its weights the checkpoint's repository and
    file, 1000 classes, and the evaluation transform transformers' conversion script saved
    with it (``ConvNextImageProcessor`` at the checkpoint's size: bicubic, ImageNet mean/std,
    ``crop_pct`` 0.875 at 224; the processor does not crop at 384)."""
    pytest.importorskip("transformers")
    import torch
    from transformers import ConvNextImageProcessor, CvtForImageClassification
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

    processor = ConvNextImageProcessor()
    for name, preset in PRESETS.items():
        config = hf_config(name)
        model = preset.build(scan=True)
        for s in range(3):
            ours = model.stage_config(s + 1)
            assert ours == {
                "emb_dim": config.embed_dim[s],
                "emb_kernel": config.patch_sizes[s],
                "emb_stride": config.patch_stride[s],
                "emb_padding": config.patch_padding[s],
                "proj_kernel": config.kernel_qkv[s],
                "kv_proj_stride": config.stride_kv[s],
                "heads": config.num_heads[s],
                "depth": config.depth[s],
                "mlp_mult": config.mlp_ratio[s],
            }, (name, s)
            # queries of stride 1, every projection padded kernel // 2 (ours), heads of 64 channels
            assert (config.stride_q[s], config.padding_q[s], config.padding_kv[s]) == (1, 1, 1)
            assert ours["proj_kernel"] // 2 == 1 and config.embed_dim[s] // config.num_heads[s] == 64
            assert (config.qkv_projection_method[s], config.qkv_bias[s]) == ("dw_bn", model.qkv_bias)
        assert list(config.cls_token) == [False, False, model.cls_token]
        assert (model.separate_kv, model.full_dim_scale, model.final_norm) == (True, True, True)
        assert (model.channels, model.num_classes) == (config.num_channels, config.num_labels)
        with torch.device("meta"):
            reference = CvtForImageClassification(config)
        assert {m.eps for m in reference.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
        if name == SMALLEST or ALL_PRESETS:  # in CI the others' sizes are checked above
            shapes = jax.eval_shape(model.init, jax.random.key(0), model.sample_input())
            count = sum(x.size for x in jax.tree.leaves(shapes["params"]))
            assert count == sum(p.numel() for p in reference.parameters()), name

        (tag, weights), = preset.weights.items()  # fmt: skip
        image = 384 if "_384" in name else 224
        assert tag == ("in22k_ft_in1k" if name.endswith("_22k") else "in1k")
        assert (weights.hub_id, weights.filename) == (
            "microsoft/" + name.replace("_", "-"),
            "pytorch_model.bin",
        )
        assert (weights.num_classes, weights.input_size, model.image_size) == (1000, (image, image), image)
        assert (list(weights.mean), list(weights.std)) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
        assert processor.resample == PILImageResampling.BICUBIC and weights.interpolation == "bicubic"
        assert weights.crop_pct == (processor.crop_pct if image < 384 else 1.0)
        assert weights.license == "apache-2.0"  # the model cards'
        assert preset.classifier == ("classifier",)


@parity
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_logits_match_transformers(name):
    """Converted weights of every preset give transformers' float32 eval logits at the preset's
    input size (the stacked layout of ``scan=True``). In CI CvT-13's are checked through the
    README (test_readme_pretrained_usage_matches_transformers)."""
    if not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    pytest.importorskip("transformers")
    reference = build_hf_reference(name)
    model = PRESETS[name].build(scan=True)
    variables = from_transformers(numpy_state_dict(reference), model)
    images = sample_images(model)
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(ours, hf_outputs(reference, images), suite="transformers", case=name)


@pytest.fixture(scope="module")
def hf_checkpoint():
    """A perturbed transformers CvT-13 and its state_dict."""
    pytest.importorskip("transformers")
    reference = build_hf_reference(SMALLEST, seed=1)
    return reference, numpy_state_dict(reference)


@parity
def test_readme_pretrained_usage_matches_transformers(tmp_path, monkeypatch, hf_checkpoint):
    """The README's ```python hub block, as written, against an offline cache holding a
    transformers CvT-13 checkpoint as the Hub holds it (a torch ``pytorch_model.bin``): CI's
    parity check of the presets: its logits at 224 x 224 (``scan=True``) are transformers'.
    Its fine-tuning model has a new 10-class head and every other parameter the checkpoint's."""
    reference, state_dict = hf_checkpoint
    offline_hub(tmp_path, monkeypatch, {SMALLEST: state_dict})
    namespace = run_readme_usage(README, tag="hub")[0]
    assert len(namespace["list_models"]("cvt_*")) == 7
    config = namespace["config"]
    mean, std = np.array(config.mean, np.float32), np.array(config.std, np.float32)
    images = (np.asarray(namespace["images"]) - mean) / std
    assert namespace["logits"].shape == (1, 1000)
    assert_parity(
        namespace["logits"], hf_outputs(reference, images), suite="transformers", case=f"{SMALLEST}/readme"
    )
    tuned, tuned_variables = namespace["tuned"], namespace["tuned_variables"]
    assert (tuned.num_classes, tuned.image_size) == (10, 96)
    assert tuned_variables["params"]["to_logits"]["kernel"].shape == (384, 10)
    assert_same_variables(tuned_variables, namespace["variables"], skip=("to_logits",))


#: fewer blocks (one a stage): every layer kind, a fraction of the tracing and compiling
REDUCED = dict(s2_depth=1, s3_depth=1)


def adapted_first_conv(weight, channels):
    """timm's ``adapt_input_conv`` of a ``(out, 3, kh, kw)`` weight: one channel the sum over
    RGB, more the RGB weights repeated and scaled by ``3 / channels``."""
    if channels == 1:
        return weight.sum(1, keepdims=True)
    return (np.tile(weight, (1, -(-channels // 3), 1, 1))[:, :channels] * 3 / channels).astype(weight.dtype)


def test_channels_adapt_the_first_convolution(random_checkpoint):
    """``channels``: the first embedding convolution fitted as timm's ``adapt_input_conv``
    fits a first convolution (transformers itself has no such adaptation); every other
    parameter is the checkpoint's."""
    model, variables, state_dict = random_checkpoint
    weight = state_dict["cvt.encoder.stages.0.embedding.convolution_embeddings.projection.weight"]
    for channels in (1, 5):
        adapted = from_transformers(state_dict, model.clone(channels=channels))
        kernel = adapted["params"]["stages_0"]["conv"]["kernel"]
        np.testing.assert_allclose(
            kernel, adapted_first_conv(weight, channels).transpose(2, 3, 1, 0), rtol=1e-6
        )
        assert_same_variables(adapted, variables, skip=("stages_0']['conv']['kernel",))


@parity
def test_other_size_classes_and_channels_load_as_transformers_does(tmp_path):
    """From a torch file: ``num_classes=10`` gives a new head (every other parameter the
    file's), ``channels=5`` fits the first convolution (timm's ``adapt_input_conv``), and any
    image size takes the same weights: the pooled features of 40 x 56 images are those of
    transformers' model with ``num_channels=5`` given that convolution. (CI checks the
    pieces without compiling: test_channels_adapt_the_first_convolution and the README's
    fine-tuning model.)"""
    if not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    pytest.importorskip("transformers")
    import torch
    from transformers import CvtForImageClassification

    # transformers' CvtStage reads a drop-path rate by stage index: stage s needs s + 1 blocks
    depth = dict(s1_depth=1, s2_depth=2, s3_depth=3)
    reference = build_hf_reference(SMALLEST, seed=3, depth=[1, 2, 3])
    state_dict = numpy_state_dict(reference)
    path = save_torch(state_dict, tmp_path / "pytorch_model.bin")
    model, variables = create_model(
        SMALLEST, pretrained=path, num_classes=10, channels=5, rng=jax.random.key(3), scan=True, **depth
    )
    assert (model.num_classes, model.channels) == (10, 5)
    params = variables["params"]
    assert params["to_logits"]["kernel"].shape == (384, 10)
    np.testing.assert_array_equal(
        params["stages_2"]["cls_token"], state_dict["cvt.encoder.stages.2.cls_token"][0]
    )
    np.testing.assert_array_equal(params["norm"]["scale"], state_dict["layernorm.weight"])

    key = "cvt.encoder.stages.0.embedding.convolution_embeddings.projection.weight"
    five = adapted_first_conv(state_dict[key], 5)
    torch.manual_seed(0)
    other = CvtForImageClassification(hf_config(SMALLEST, depth=[1, 2, 3], num_channels=5)).eval()
    other.load_state_dict({k: torch.from_numpy(v) for k, v in dict(state_dict, **{key: five}).items()})
    images = np.asarray(jax.random.normal(jax.random.key(5), (2, 40, 56, 5), jnp.float32))
    features = jax.jit(lambda v, x: model.apply(v, x, pre_logits=True))(variables, images)
    case = f"{SMALLEST}/reduced/40x56/5ch/pre_logits"
    assert_parity(features, hf_outputs(other, images, pre_logits=True), suite="transformers", case=case)


@pytest.fixture(scope="module")
def random_checkpoint():
    """Random variables of the smallest preset, reduced (no compile), and them in transformers' layout."""
    model = PRESETS[SMALLEST].build(**REDUCED)
    variables = random_variables(model, model.sample_input(), seed=2)
    return model, variables, hf_state_dict(model, variables)


def test_from_transformers_inverts_the_test_writer(random_checkpoint):
    """from_transformers reads back exactly what :func:`hf_state_dict` wrote (so the tests that
    load such files without transformers load its real layout: the parity tests check it)."""
    model, variables, state_dict = random_checkpoint
    assert_same_variables(from_transformers(state_dict, model), variables)
    stacked = from_transformers(state_dict, model.clone(scan=True))  # one stack a stage
    np.testing.assert_array_equal(
        stacked["batch_stats"]["stages_2"]["transformer"]["layers"]["attn"]["to_v"]["bn"]["var"][0],
        variables["batch_stats"]["stages_2"]["transformer"]["layers_0"]["attn"]["to_v"]["bn"]["var"],
    )


def test_pretrained_true_reads_the_hub_cache(tmp_path, monkeypatch, random_checkpoint):
    """``pretrained=True``: the ``pytorch_model.bin`` in the Hub's cache, read with torch (the
    README's test loads one with new classes)."""
    pytest.importorskip("torch")
    _, expected, state_dict = random_checkpoint
    offline_hub(tmp_path, monkeypatch, {SMALLEST: state_dict})
    model, variables = create_model(SMALLEST, pretrained=True, image_size=64, **REDUCED)
    assert model == PRESETS[SMALLEST].build(**dict(REDUCED, image_size=64))
    assert_same_variables(variables, expected)
    with pytest.raises(Exception, match=r"offline|cache|LocalEntryNotFound"):  # not in the cache
        create_model("cvt_21", pretrained=True)


def test_missing_hub_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'vit-layers-flax\[hub\]'"):
        create_model(SMALLEST, pretrained=True)


def test_bad_names_sizes_and_checkpoints_raise_clear_errors(tmp_path, random_checkpoint):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"unknown model 'cvt_31'.*cvt_13"):
        create_model("cvt_31")
    with pytest.raises(ValueError, match=r"no weights tagged 'in1k'.*in22k_ft_in1k"):
        get_preset("cvt_13_384_22k.in1k")
    model, _, state_dict = random_checkpoint
    path = save_torch(state_dict, tmp_path / "pytorch_model.bin")
    # the 7 x 7 stride-4 embedding pads 2: images of at least 3 pixels
    assert model.input_sizes().smallest == 3 and (3, 3) in model.input_sizes()
    with pytest.raises(ValueError, match=r"image_size must be at least 3 .*received 2"):
        create_model(SMALLEST, pretrained=path, image_size=2, **REDUCED)
    with pytest.raises(ValueError, match=r"emb_padding non-negative\), received s2_emb_padding=-1"):
        CvT(num_classes=10, s2_emb_padding=-1)
    with pytest.raises(ValueError, match=r"at least 3 x 3 pixels.*received shape \(1, 2, 9, 3\)"):
        model.apply({}, jnp.zeros((1, 2, 9, 3)))
    with pytest.raises(
        ConversionError, match=r"not a checkpoint of cvt_w24_384_22k.*expected shape \(7, 7, 3, 192\)"
    ):
        create_model("cvt_w24_384_22k", pretrained=path, s1_depth=1, **REDUCED)
    with pytest.raises(
        ConversionError, match=r"no key 'cvt\.encoder\.stages\.1\.layers\.1\.layernorm_before"
    ):
        from_transformers(state_dict, model.clone(s2_depth=2))  # a block too many
    bad = dict(state_dict, **{"cvt.encoder.stages.0.extra": np.zeros(3, np.float32)})
    bad["layernorm.weight"] = np.zeros(5, np.float32)
    with pytest.raises(
        ConversionError,
        match=r"unexpected state_dict keys.*stages\.0\.extra.*params/norm/scale: expected shape \(384,\)",
    ):
        from_transformers(bad, model)
    no_token = {k: v for k, v in state_dict.items() if not k.endswith("cls_token")}
    with pytest.raises(ConversionError, match=r"has no class token .*the model has cls_token=True"):
        from_transformers(no_token, model)
    with pytest.raises(ConversionError, match=r"has a class token .*the model has cls_token=False"):
        from_transformers(state_dict, model.clone(cls_token=False))


def test_each_converter_needs_its_architecture():
    original = PRESETS[SMALLEST].build(**REDUCED)
    with pytest.raises(ConversionError, match=r"from_vit_pytorch: expected a CvT with qkv_bias=False.*"
                       r"received qkv_bias=True, separate_kv=True, full_dim_scale=True, cls_token=True, final_norm=True"):  # fmt: skip
        from_vit_pytorch({}, original)
    with pytest.raises(
        ConversionError, match=r"from_vit_pytorch: .*emb_kernel // 2.*received s1_emb_padding=2$"
    ):
        from_vit_pytorch({}, CvT(num_classes=10, s1_emb_padding=2, s2_emb_padding=1))
    with pytest.raises(ConversionError, match=r"from_transformers: expected a CvT with separate_kv=True.*"
                       r"received separate_kv=False, full_dim_scale=False, final_norm=False"):  # fmt: skip
        from_transformers({}, CvT(num_classes=10))


def test_original_architecture_layout_and_class_token():
    """The original CvT's options: q/k/v projections of their own with biased pointwise halves,
    a class token in the last stage (``stages_2/cls_token``, dropped from the feature maps)
    that the head reads after the final LayerNorm (``norm``). (transformers' parity checks the
    numbers, with and without the class token.)"""
    model = CvT(**dict(PRESETS[SMALLEST].config, s1_depth=0, s2_emb_dim=64, s2_heads=1, s2_depth=0,
                       s3_emb_dim=128, s3_heads=2, s3_depth=1, num_classes=5, image_size=(40, 24)))  # fmt: skip
    images = model.sample_input(2)
    assert images.shape == (2, 40, 24, 3)  # image_size: sample_input's size
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    shapes = jax.tree.map(jnp.shape, variables["params"])
    attn = shapes["stages_2"]["transformer"]["layers_0"]["attn"]
    assert set(attn) == {"norm", "to_q", "to_k", "to_v", "to_out"}
    assert attn["to_k"] == {"depthwise": {"kernel": (3, 3, 1, 128)}, "bn": {"scale": (128,), "bias": (128,)},
                            "pointwise": {"kernel": (128, 128), "bias": (128,)}}  # fmt: skip
    assert shapes["stages_2"]["cls_token"] == (1, 128) and "cls_token" not in shapes["stages_1"]
    assert shapes["norm"] == {"scale": (128,), "bias": (128,)} and shapes["stages_0"]["conv"]["kernel"] == (
        7,
        7,
        3,
        64,
    )
    maps = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True), variables, images)
    # 40 x 24 -> (40 + 4 - 7) // 4 + 1 = 10 x 6 -> 5 x 3 -> 3 x 2 (the class token dropped)
    assert [m.shape for m in maps] == [(2, 10, 6, 64), (2, 5, 3, 64), (2, 3, 2, 128)]
    bare = {**variables, "params": {k: v for k, v in variables["params"].items() if k != "to_logits"}}
    assert jax.eval_shape(model.clone(num_classes=0).apply, bare, images).shape == (2, 128)


@parity
def test_without_class_token_matches_transformers():
    """``cls_token=False`` with ``final_norm``: transformers' ``CvtConfig(cls_token=[False] * 3)``,
    whose head reads the mean of the LayerNorm of each token of the last map (no preset's)."""
    if not ALL_PRESETS:
        pytest.skip("nox -s pretrained_parity runs it")
    pytest.importorskip("transformers")
    reference = build_hf_reference(SMALLEST, seed=4, depth=[1, 2, 3], cls_token=[False, False, False])
    model = PRESETS[SMALLEST].build(s2_depth=2, s3_depth=3, cls_token=False, scan=True)
    variables = from_transformers(numpy_state_dict(reference), model)
    images = np.asarray(jax.random.normal(jax.random.key(6), (2, 72, 48, 3), jnp.float32))
    ours = jax.jit(model.apply)(variables, images)
    assert_parity(
        ours, hf_outputs(reference, images), suite="transformers", case=f"{SMALLEST}/no-class-token"
    )
