import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from deepvit_flax import CONFIGS, DeepViT, ReAttention, from_vit_pytorch

from vit_layers_flax.testing import ContractSuite, ModelCase
from vit_layers_flax.testing.readme import readme_python_blocks

README = Path(__file__).parents[1] / "README.md"

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    ModelCase(
        # the training recipe's configuration, with its dropout
        "small",
        dict(CONFIGS["small"], num_classes=10),
        (2, 16, 16, 3),
        bad_spatial=[(17, 16), (20, 16), (16, 12)],
    ),
    ModelCase("mean-gray", dict(SMALL, pool="mean", channels=1, num_classes=7), (2, 32, 32, 1)),
    ModelCase(
        # heads == 1 and dim_head == dim: DeepViT keeps to_out (unlike ViT)
        "one-head-4ch",
        dict(
            image_size=24,
            patch_size=6,
            num_classes=5,
            dim=32,
            depth=1,
            heads=1,
            dim_head=32,
            mlp_dim=64,
            channels=4,
        ),
        (2, 24, 24, 4),
    ),
]


def _dead_parameters(built) -> set[str]:
    def loss(params):
        out = built.model.apply({**built.variables, "params": params}, built.images)
        return jnp.sum(jnp.sin(out.astype(jnp.float32)))

    grads = jax.jit(jax.grad(loss))(built.variables["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert all(bool(jnp.isfinite(g).all()) for _, g in flat)
    return {jax.tree_util.keystr(p) for p, g in flat if g.size and not bool(jnp.any(g != 0))}


class TestDeepViT(ContractSuite):
    model_cls = DeepViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("deepvit", "DeepViT")
    cases = CASES
    readme = README
    readme_shapes = {"output": (1, 1000), "embeddings": (2, 64), "maps": [(2, 4, 4, 64), (2, 4, 4, 64)]}

    def test_every_parameter_gets_a_gradient(self, built):
        if built.case.kwargs["heads"] > 1:
            return super().test_every_parameter_gets_a_gradient(built)
        # With one head the LayerNorm over the heads axis normalises a single value: its
        # output is its bias, so the head-mixing matrix and the norm's scale get no
        # gradient (the reference behaves the same). Everything else must.
        expected = {
            f"['transformer']['layers_{i}']['attn']['{name}']"
            for i in range(built.case.kwargs["depth"])
            for name in ("reattn_weights", "reattn_norm']['scale")
        }
        assert _dead_parameters(built) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pool="max"), "pool must be 'cls' or 'mean'"),
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(image_size=(32, 32)), "must be ints"),
        (dict(patch_size=(8, 8)), "must be ints"),
        (dict(heads=0), "must be positive"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepViT(**{**SMALL, **kwargs})


def test_readme_usage_is_the_readme_configuration():
    calls = [
        node
        for block in readme_python_blocks(README)
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeepViT"
    ]
    # the first call is the usage; the features example follows
    assert {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords} == CONFIGS["readme"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configuration_builds_at_its_input_size(name):
    model = DeepViT(**{"num_classes": 10, **CONFIGS[name]})
    side = model.input_sizes().smallest
    images = jax.ShapeDtypeStruct((1, side, side, model.channels), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    assert jax.eval_shape(model.apply, shapes, images).shape == (1, model.num_classes)


def test_input_sizes_are_the_configured_size():
    sizes = DeepViT(**SMALL).input_sizes()
    assert sizes.smallest == 32 and 32 in sizes and 40 not in sizes


def test_parameter_tree_mirrors_the_reference():
    model = DeepViT(**{**SMALL, "depth": 1})
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    params = shapes["params"]
    assert set(params) == {"to_patch_embedding", "embedding", "transformer", "mlp_head"}
    assert set(params["transformer"]) == {"layers_0"}  # no final norm
    attn = params["transformer"]["layers_0"]["attn"]
    assert set(attn) == {"norm", "to_qkv", "reattn_weights", "reattn_norm", "to_out"}
    assert attn["reattn_weights"].shape == (4, 4) and attn["reattn_norm"]["scale"].shape == (4,)
    embedding = params["embedding"]
    assert embedding["pos_embedding"].shape == (17, 64) and embedding["cls_token"].shape == (1, 64)


def test_re_attention_matches_a_direct_computation():
    """Softmax attention, mixed over heads by ``reattn_weights``, LayerNorm over heads, then ``@ v``."""
    dim, heads, dim_head = 16, 3, 8
    x = jax.random.normal(jax.random.key(0), (2, 5, dim))
    module = ReAttention(dim, heads=heads, dim_head=dim_head)
    variables = module.init(jax.random.key(1), x)
    p = jax.tree.map(np.asarray, variables["params"])
    p["reattn_norm"] = {"scale": 1 + 0.1 * np.arange(heads), "bias": 0.01 * np.arange(heads)}
    out = module.apply({"params": p}, x)

    xn = np.asarray(x, np.float64)
    xn = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-5)
    xn = xn * p["norm"]["scale"] + p["norm"]["bias"]
    q, k, v = np.split(xn @ p["to_qkv"]["kernel"], 3, axis=-1)
    q, k, v = (t.reshape(2, 5, heads, dim_head).transpose(0, 2, 1, 3) for t in (q, k, v))
    dots = q @ k.transpose(0, 1, 3, 2) * dim_head**-0.5
    attn = np.exp(dots - dots.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    attn = np.einsum("bhij,hg->bijg", attn, p["reattn_weights"])
    attn = (attn - attn.mean(-1, keepdims=True)) / np.sqrt(attn.var(-1, keepdims=True) + 1e-5)
    attn = (attn * p["reattn_norm"]["scale"] + p["reattn_norm"]["bias"]).transpose(0, 3, 1, 2)
    expected = (attn @ v).transpose(0, 2, 1, 3).reshape(2, 5, heads * dim_head)
    expected = expected @ p["to_out"]["kernel"] + p["to_out"]["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
