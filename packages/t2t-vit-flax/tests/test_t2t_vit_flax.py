from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from t2t_vit_flax import T2TViT, from_vit_pytorch

from vit_layers_flax import ConversionError, Transformer
from vit_layers_flax.testing import (
    PARITY_RTOL,
    ContractSuite,
    ModelCase,
    load_reference,
    random_variables,
    reference_outputs,
    relative_error,
)

SMALL = dict(image_size=16, num_classes=10, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64)

CASES = [
    ModelCase(
        "seed",
        dict(
            dim=512,
            image_size=224,
            depth=5,
            heads=8,
            mlp_dim=512,
            num_classes=1000,
            t2t_layers=((7, 4), (3, 2), (3, 2)),
        ),
        (1, 224, 224, 3),
        seed_config=True,
    ),
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
    readme_shapes = {"output": (1, 1000)}


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
    assert shapes["params"]["pos_embedding"].shape == (4 * 4 + 1, 32)


def _image(shape):
    return np.asarray(jax.random.normal(jax.random.key(0), shape, jnp.float32))


CUSTOM = dict(image_size=16, num_classes=10, dim=32, t2t_layers=((3, 2), (3, 2)))


def test_custom_transformer():
    model = T2TViT(**CUSTOM, transformer=Transformer(32, depth=1, heads=1, dim_head=8, mlp_dim=16))
    img = _image((2, 16, 16, 3))
    variables = random_variables(model, img)
    assert variables["params"]["transformer"]["layers_0"]["attn"]["to_qkv"]["kernel"].shape == (32, 24)
    assert jax.jit(model.apply)(variables, img).shape == (2, 10)


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
    model = T2TViT(**CUSTOM, transformer=Transformer(32, depth=1, heads=1, dim_head=8, mlp_dim=16))
    variables = from_vit_pytorch(reference.state_dict(), model)
    img = _image((2, 16, 16, 3))
    assert (
        relative_error(jax.jit(model.apply)(variables, img), reference_outputs(reference, img)) <= PARITY_RTOL
    )

    class Other(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return nn.Dense(x.shape[-1])(x)

    other = T2TViT(**CUSTOM, transformer=Other())
    with pytest.raises(ConversionError, match="custom transformer"):
        from_vit_pytorch(reference.state_dict(), other)
