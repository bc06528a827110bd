import ast
import functools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from t2t_vit_flax import CONFIGS, T2TViT, from_vit_pytorch

from vit_layers_flax import ConversionError, FeatureInfo, Transformer, TransformerBlock
from vit_layers_flax.testing import (
    PARITY_RTOL,
    ContractSuite,
    ModelCase,
    load_reference,
    random_variables,
    readme_python_blocks,
    reference_outputs,
    relative_error,
)

SMALL = dict(image_size=16, num_classes=10, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 224, 224, 3), readme_config=True),
    ModelCase(
        # stage 1: 16 -> 8 (64 tokens of 27), stage 2: 8 -> 4 (16 tokens of 243)
        "two-layers-dropout",
        dict(SMALL, t2t_layers=((3, 2), (3, 2)), dropout=0.1, emb_dropout=0.1),
        (2, 16, 16, 3),
        bad_spatial=[(17, 16), (16, 24), (32, 32)],
    ),
    ModelCase(
        # one soft split, so no soft-split transformer: 32 -> 9 (81 tokens of 48)
        "one-layer-mean",
        dict(SMALL, image_size=32, t2t_layers=((4, 4),), pool="mean", depth=2),
        (2, 32, 32, 3),
    ),
    ModelCase(
        # odd/even kernels, stride 1 (padding 0): 24 -> 8 -> 6 -> 4, widths 25, 225, 900
        "three-layers-mixed-kernels-gray",
        dict(SMALL, image_size=24, t2t_layers=((5, 3), (3, 1), (2, 2)), channels=1, num_classes=7),
        (2, 24, 24, 1),
    ),
]


class TestT2TViT(ContractSuite):
    model_cls = T2TViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("t2t", "T2TViT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {"output": (1, 1000), "embeddings": (2, 64), "maps": [(2, 8, 8, 64), (2, 8, 8, 64)]}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pool="max"), "pool must be 'cls' or 'mean'"),
        (dict(image_size=(16, 16)), "image_size must be a positive int"),
        (dict(t2t_layers=()), "at least one"),
        (dict(t2t_layers=((3, 0),)), "positive"),
        (dict(image_size=4, t2t_layers=((7, 4), (7, 4), (7, 4))), "too small"),
        (dict(depth=None), "depth, heads, and mlp_dim must be supplied"),
        (dict(heads=0), "must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        T2TViT(**{**SMALL, **kwargs})


def test_soft_split_transformers_have_no_output_projection():
    model = T2TViT(**SMALL, t2t_layers=((3, 2), (3, 2)))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
    embedding = shapes["params"]["to_patch_embedding"]
    assert set(embedding) == {"transformers_0", "proj"}
    attn = embedding["transformers_0"]["layers_0"]["attn"]
    assert set(attn) == {"norm", "to_qkv"} and attn["to_qkv"]["kernel"].shape == (27, 3 * 27)
    assert embedding["proj"]["kernel"].shape == (243, 32)
    assert shapes["params"]["embedding"]["pos_embedding"].shape == (4 * 4 + 1, 32)


def _image(shape):
    return np.asarray(jax.random.normal(jax.random.key(0), shape, jnp.float32))


CUSTOM = dict(image_size=16, num_classes=10, dim=32, t2t_layers=((3, 2), (3, 2)))


def _custom_transformer():
    """``vit_pytorch.vit.Transformer(32, 1, 1, 8, 16)`` as a vit-layers-flax ``Transformer``."""
    return Transformer(1, functools.partial(TransformerBlock, 32, 1, 8, 16))


def test_custom_transformer():
    model = T2TViT(**CUSTOM, transformer=_custom_transformer())
    img = _image((2, 16, 16, 3))
    variables = random_variables(model, img)
    assert variables["params"]["transformer"]["layers_0"]["attn"]["to_qkv"]["kernel"].shape == (32, 24)
    assert jax.jit(model.apply)(variables, img).shape == (2, 10)
    maps = jax.jit(functools.partial(model.apply, return_features=True))(variables, img)
    assert [m.shape for m in maps] == [(2, 4, 4, 32)]
    assert model.feature_info == (FeatureInfo(32, (4, 4), "transformer/layers_0"),)


def test_custom_transformer_without_blocks_gives_one_map():
    class Other(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return nn.Dense(x.shape[-1])(x)

    model = T2TViT(**CUSTOM, transformer=Other())
    img = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), img)
    maps = jax.eval_shape(functools.partial(model.apply, return_features=True), variables, img)
    assert [m.shape for m in maps] == [(2, 4, 4, 32)]
    assert model.feature_info == (FeatureInfo(32, (4, 4), "transformer"),)


@pytest.mark.parity
def test_custom_transformer_converts_and_matches_reference():
    vit = load_reference("vit")
    t2t = load_reference("t2t")
    import torch

    torch.manual_seed(0)
    reference = t2t.T2TViT(**CUSTOM, transformer=vit.Transformer(32, 1, 1, 8, 16)).eval()
    with torch.no_grad():  # perturb, so that parity does not rest on initial values
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    model = T2TViT(**CUSTOM, transformer=_custom_transformer())
    variables = from_vit_pytorch(reference.state_dict(), model)
    img = _image((2, 16, 16, 3))
    assert (
        relative_error(jax.jit(model.apply)(variables, img), reference_outputs(reference, img)) <= PARITY_RTOL
    )

    class Other(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return nn.Dense(x.shape[-1])(x)

    class OtherBlock(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return x + nn.Dense(x.shape[-1])(x)

    for other in (Other(), Transformer(1, OtherBlock)):
        with pytest.raises(ConversionError, match="custom transformer"):
            from_vit_pytorch(reference.state_dict(), T2TViT(**CUSTOM, transformer=other))


@pytest.mark.parametrize("name", [name for name in CONFIGS if name.startswith("t2t_vit_")])
def test_paper_configurations_build(name):
    model = T2TViT(**CONFIGS[name])
    side = model.input_sizes().smallest
    assert side == 224
    images = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    assert shapes["embedding"]["pos_embedding"].shape == (14 * 14 + 1, CONFIGS[name]["dim"])
    assert shapes["mlp_head"]["kernel"].shape == (CONFIGS[name]["dim"], 1000)


def test_input_sizes_smallest_works():
    """T2T-ViT is fixed-size: the contract suite checks that other sizes are refused."""
    model = T2TViT(**SMALL, t2t_layers=((3, 2), (3, 2)))
    side = model.input_sizes().smallest
    assert side == SMALL["image_size"] and side in model.input_sizes()
    out = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32),
    )
    assert out.shape == (1, SMALL["num_classes"])


def test_readme_usage_is_the_readme_configuration():
    usage = ast.parse(readme_python_blocks(Path(__file__).parents[1] / "README.md")[0])
    call = next(
        n for n in ast.walk(usage) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "T2TViT"
    )
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == CONFIGS["readme"]
