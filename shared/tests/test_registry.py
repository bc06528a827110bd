"""The preset registry, the adaptations of pretrained weights, and the original-ViT options of
the shared layers."""

from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_layers_flax import (
    ENTRY_POINT_GROUP,
    Attention,
    ConversionError,
    FeedForward,
    PatchEmbedding,
    Preset,
    PretrainedConfig,
    Transformer,
    TransformerBlock,
    adapt_input_channels,
    create_model,
    get_preset,
    list_models,
    pretrained_config,
    registry,
    resample_position_embedding,
)


def test_original_vit_options_of_the_shared_layers():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    attention = Attention(16, heads=2, dim_head=8, qkv_bias=True, norm_epsilon=1e-6)
    params = attention.init(jax.random.key(1), x)["params"]
    assert params["to_qkv"]["bias"].shape == (48,)
    assert "bias" not in Attention(16, heads=2, dim_head=8).init(jax.random.key(1), x)["params"]["to_qkv"]
    embed = PatchEmbedding(16, (4, 4), norms=False)
    images = jnp.ones((1, 8, 8, 3))
    assert set(embed.init(jax.random.key(0), images)["params"]) == {"proj"}
    # the epsilon reaches every LayerNorm: on tokens of tiny variance it decides the output
    tokens = 1.0 + 1e-3 * jax.random.normal(jax.random.key(2), (2, 5, 16))
    stack = Transformer(0, TransformerBlock, norm_epsilon=1.0)
    centered = tokens - tokens.mean(-1, keepdims=True)
    expected = centered / jnp.sqrt(jnp.square(centered).mean(-1, keepdims=True) + 1.0)
    np.testing.assert_allclose(
        stack.apply(stack.init(jax.random.key(0), tokens), tokens), expected, rtol=1e-5
    )
    for layer in (Attention(16, heads=2, dim_head=8), FeedForward(16, 32)):
        variables = layer.init(jax.random.key(3), tokens)
        default = layer.apply(variables, tokens)
        np.testing.assert_array_equal(default, layer.clone(norm_epsilon=1e-5).apply(variables, tokens))
        assert not np.allclose(default, layer.clone(norm_epsilon=1.0).apply(variables, tokens), atol=1e-3)


def test_resample_position_embedding_keeps_prefix_and_identity():
    pos = np.random.default_rng(0).standard_normal((1 + 16, 8)).astype(np.float32)
    assert resample_position_embedding(pos, (4, 4), prefix_tokens=1) is pos
    out = resample_position_embedding(pos, (6, 2), prefix_tokens=1)
    assert out.shape == (1 + 12, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], pos[0])
    with pytest.raises(ConversionError, match="not a square grid"):
        resample_position_embedding(pos, (4, 4))  # 17 rows without the prefix
    with pytest.raises(ConversionError, match=r"expected 3 \* 3 grid rows, received 16"):
        resample_position_embedding(pos, (4, 4), prefix_tokens=1, old_grid=(3, 3))


@pytest.mark.parity
@pytest.mark.parametrize("old, new", [((14, 14), (6, 6)), ((7, 7), (12, 12)), ((4, 4), (3, 5))])
def test_resample_position_embedding_is_timms(old, new):
    pos_embed = pytest.importorskip("timm.layers.pos_embed")
    import torch

    pos = np.random.default_rng(1).standard_normal((2 + old[0] * old[1], 24)).astype(np.float32)
    theirs = pos_embed.resample_abs_pos_embed(
        torch.from_numpy(pos)[None], list(new), old_size=list(old), num_prefix_tokens=2
    )[0].numpy()
    ours = resample_position_embedding(pos, new, prefix_tokens=2, old_grid=old)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-6)


@pytest.mark.parity
@pytest.mark.parametrize("channels, inputs", [(1, 3), (2, 3), (5, 3), (3, 3), (1, 6)])
def test_adapt_input_channels_is_timms(channels, inputs):
    timm_models = pytest.importorskip("timm.models")
    import torch

    weight = np.random.default_rng(2).standard_normal((4, inputs, 2, 2)).astype(np.float32)
    theirs = timm_models.adapt_input_conv(channels, torch.from_numpy(weight.copy())).numpy()
    np.testing.assert_allclose(adapt_input_channels(weight, channels), theirs, rtol=1e-6)


def test_adapt_input_channels_needs_rgb_to_widen():
    with pytest.raises(ConversionError, match="expected 3 input channels to adapt to 4, received 2"):
        adapt_input_channels(np.zeros((4, 2, 2, 2)), 4)


class _EntryPoint:
    def __init__(self, value, presets):
        self.value, self._presets = value, presets

    def load(self):
        return self._presets


@pytest.fixture
def fake_registry(monkeypatch):
    """Two packages' entry points, one preset each; ``add`` registers a third package."""
    from vit_layers_flax.registry import ENTRY_POINT_GROUP as group

    weights = PretrainedConfig("org/tiny.a", 10, (32, 32), (0.5,) * 3, (0.5,) * 3)
    points = [
        _EntryPoint("one:PRESETS", {"tiny_a": Preset(dict, {}, None, weights={"a": weights, "b": weights})}),
        _EntryPoint("two:PRESETS", {"tiny_b": Preset(dict, {}, None)}),
    ]
    monkeypatch.setattr(
        registry, "entry_points", lambda group=None: points if group == ENTRY_POINT_GROUP else []
    )
    assert group == "vit_layers_flax.presets"
    return points


def test_registry_lists_resolves_and_refuses_duplicates(fake_registry):
    assert list_models() == ["tiny_a", "tiny_b"]
    assert list_models("*_b") == ["tiny_b"]
    assert list_models(pretrained=True) == ["tiny_a.a", "tiny_a.b"]
    assert get_preset("tiny_a")[1] == "a" and get_preset("tiny_a.b")[1] == "b"
    assert get_preset("tiny_b")[1] is None
    assert pretrained_config("tiny_a").hub_id == "org/tiny.a"
    with pytest.raises(ValueError, match="tiny_b has no published weights"):
        pretrained_config("tiny_b")
    with pytest.raises(ValueError, match=r"unknown model 'tiny_c'.*did you mean"):
        get_preset("tiny_c")
    with pytest.raises(ValueError, match="no weights tagged 'c'"):
        create_model("tiny_a.c")
    fake_registry.append(_EntryPoint("three:PRESETS", {"tiny_a": Preset(dict, {}, None)}))
    with pytest.raises(RuntimeError, match="'tiny_a' is registered by both one:PRESETS and three:PRESETS"):
        list_models()


def test_installed_packages_register_through_the_entry_point_group():
    points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    for point in points:
        presets = point.load()
        assert all(isinstance(p, Preset) for p in presets.values()), point.value
    assert set(list_models()) == {name for point in points for name in point.load()}


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_offline_hub_writes_the_published_format(fake_registry, tmp_path, monkeypatch, filename):
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("safetensors")
    if filename.endswith(".bin"):
        pytest.importorskip("torch")
    from vit_layers_flax.checkpoint import load_torch_state_dict
    from vit_layers_flax.registry import download_weights
    from vit_layers_flax.testing import offline_hub

    weights = PretrainedConfig("org/tiny.a", 10, (32, 32), (0.5,) * 3, (0.5,) * 3, filename=filename)
    fake_registry[0]._presets["tiny_a"] = Preset(dict, {}, None, weights={"a": weights})
    state_dict = {"head.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    offline_hub(tmp_path, monkeypatch, {"tiny_a": state_dict})
    path = download_weights(weights)
    assert path.endswith(filename)
    if filename.endswith(".bin"):  # a torch zip archive, as the publisher's file is
        with open(path, "rb") as f:
            assert f.read(2) == b"PK"
    np.testing.assert_array_equal(load_torch_state_dict(path)["head.weight"], state_dict["head.weight"])


@pytest.mark.parametrize("size_in,size_out", [(7, 5), (5, 7), (14, 16), (240, 224)])
def test_resize_bicubic_is_torchs(size_in, size_out):
    torch = pytest.importorskip("torch")
    from vit_layers_flax import resize_bicubic

    x = np.random.default_rng(0).normal(size=(2, size_in, size_in + 1, 3)).astype(np.float32)
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2),
        size=(size_out, size_out + 2),
        mode="bicubic",
        align_corners=False,
    )
    ours = jax.jit(lambda x: resize_bicubic(x, (size_out, size_out + 2)))(x)
    np.testing.assert_allclose(np.asarray(ours), theirs.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=2e-6)
    with pytest.raises(ValueError, match=r"one size per axis \(1, 2\), received \(4,\)"):
        resize_bicubic(x, (4,))
