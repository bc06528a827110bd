import ast
import dataclasses
import functools
import inspect
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from crossvit_flax import (
    CONFIGS,
    CrossAttention,
    CrossAttentionLayer,
    CrossTransformer,
    CrossViT,
    from_vit_pytorch,
)

from vit_layers_flax import Dense, InputSizes
from vit_layers_flax.testing import (
    ContractSuite,
    ModelCase,
    load_reference,
    readme_python_blocks,
    relative_error,
)

README = Path(__file__).parents[1] / "README.md"

# the smallest CrossViT: one multi-scale block of one layer per branch and one cross round
SMALL = dict(
    image_size=32,
    num_classes=10,
    depth=1,
    sm_dim=32,
    sm_patch_size=8,
    sm_enc_depth=1,
    sm_enc_heads=2,
    sm_enc_dim_head=16,
    sm_enc_mlp_dim=64,
    lg_dim=64,
    lg_patch_size=16,
    lg_enc_depth=1,
    lg_enc_heads=4,
    lg_enc_dim_head=16,
    lg_enc_mlp_dim=128,
    cross_attn_depth=1,
    cross_attn_heads=2,
    cross_attn_dim_head=16,
    dropout=0.0,
    emb_dropout=0.0,
)

CASES = [
    ModelCase("readme", CONFIGS["readme"], (1, 256, 256, 3), readme_config=True),
    ModelCase(
        # sm_dim != lg_dim: the class tokens are projected in and out of the other width
        "projected-widths-dropout",
        dict(SMALL, dropout=0.1, emb_dropout=0.1),
        (2, 32, 32, 3),
        bad_spatial=[(33, 32), (32, 40), (16, 16)],
    ),
    ModelCase(
        # sm_dim == lg_dim: no project_in/out; one head of width dim still has to_out
        "same-widths-one-head-gray",
        dict(
            SMALL,
            image_size=24,
            num_classes=5,
            sm_dim=48,
            sm_patch_size=6,
            sm_enc_heads=1,
            sm_enc_dim_head=48,
            lg_dim=48,
            lg_patch_size=12,
            lg_enc_heads=2,
            cross_attn_heads=1,
            cross_attn_dim_head=48,
            channels=1,
        ),
        (2, 24, 24, 1),
    ),
    ModelCase(
        # asymmetric branch depths and two cross-attention rounds (the README configuration has depth 4)
        "deep-small-branch-two-rounds-emb-dropout-4ch",
        dict(
            SMALL,
            image_size=16,
            num_classes=7,
            sm_patch_size=4,
            sm_enc_depth=2,
            lg_dim=48,
            lg_patch_size=8,
            lg_enc_heads=3,
            cross_attn_depth=2,
            cross_attn_heads=4,
            cross_attn_dim_head=8,
            emb_dropout=0.1,
            channels=4,
        ),
        (2, 16, 16, 4),
    ),
]


class TestCrossViT(ContractSuite):
    model_cls = CrossViT
    convert = staticmethod(from_vit_pytorch)
    reference = ("cross_vit", "CrossViT")
    cases = CASES
    readme = README
    readme_shapes = {
        "output": (1, 1000),
        "embeddings": (2, 96),
        "maps": [(2, 4, 4, 32), (2, 2, 2, 64)],
    }

    def test_pooled_features_feed_the_classifier(self, eager_case):
        """The contract's check in the order the heads' Dense layers are created, small then
        large (the contract takes them in the order of their paths, ``lg_mlp_head`` first):
        ``pre_logits`` is ``[small, large]``, each head's ``fc`` on its slice, summed, gives
        the logits, and a ``num_classes=0`` model on the same parameters returns it."""
        built = self.make_built(eager_case)
        model, params = built.model, built.variables["params"]
        created = []

        def record(next_fun, args, kwargs, context):
            if isinstance(context.module, Dense) and context.module.scope.path[-1] == "fc":
                created.append(context.module.scope.path[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            jax.eval_shape(model.init, jax.random.key(0), built.images)
        created = list(dict.fromkeys(created))  # (the interceptor sees a call more than once)
        assert created == ["sm_mlp_head", "lg_mlp_head"]
        headless = self.build(eager_case, num_classes=0)
        bare = {k: {"norm": v["norm"]} if k in created else v for k, v in params.items()}

        def run(params, bare, images):
            return (
                model.apply({"params": params}, images),
                model.apply({"params": params}, images, pre_logits=True),
                headless.apply({"params": bare}, images),
            )

        with jax.default_matmul_precision("highest"):
            logits, pooled, features = jax.jit(run)(params, bare, built.images)
        np.testing.assert_array_equal(features, pooled)
        assert pooled.shape[1] == model.num_features == model.sm_dim + model.lg_dim
        pooled = np.asarray(pooled, np.float64)
        slices = {"sm_mlp_head": pooled[:, : model.sm_dim], "lg_mlp_head": pooled[:, model.sm_dim :]}
        expected = sum(
            x @ np.asarray(params[h]["fc"]["kernel"], np.float64)
            + np.asarray(params[h]["fc"]["bias"], np.float64)
            for h, x in slices.items()
        )
        assert relative_error(logits, expected) < 1e-5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=30), "must be divisible by sm_patch_size"),
        (dict(lg_patch_size=12), "must be divisible by lg_patch_size"),
        (dict(image_size=(32, 32)), "must be positive ints"),
        (dict(depth=0), "must be positive"),
        (dict(cross_attn_heads=0), "must be positive"),
        (dict(num_classes=-1), "num_classes must not be negative"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CrossViT(**{**SMALL, **kwargs})


@pytest.mark.parity
def test_defaults_match_reference():
    signature = inspect.signature(load_reference("cross_vit").CrossViT)
    theirs = {
        k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty
    }
    ours = {f.name: f.default for f in dataclasses.fields(CrossViT) if f.name in signature.parameters}
    assert set(ours) == set(signature.parameters)
    assert {k: ours[k] for k in theirs} == theirs


def test_cross_attention_reads_class_token_and_other_patches_only():
    """A class token attends to itself and the other branch's patch tokens, not to the other
    class token; patch tokens pass through unchanged."""
    sm = jax.random.normal(jax.random.key(0), (2, 5, 32))
    lg = jax.random.normal(jax.random.key(1), (2, 3, 48))
    attention = functools.partial(CrossAttention, heads=2, dim_head=8)
    module = CrossTransformer(1, functools.partial(CrossAttentionLayer, 32, 48, attention))
    shapes = jax.eval_shape(module.init, jax.random.key(2), sm, lg)  # no init compile: fill on the host
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: 1.0 + 0.1 * rng.standard_normal(s.shape, np.float32), shapes)
    apply = jax.jit(module.apply)
    sm_out, lg_out = apply(variables, sm, lg)
    np.testing.assert_array_equal(sm_out[:, 1:], sm[:, 1:])
    np.testing.assert_array_equal(lg_out[:, 1:], lg[:, 1:])
    assert not np.allclose(sm_out[:, 0], sm[:, 0]) and not np.allclose(lg_out[:, 0], lg[:, 0])
    sm_out2, _ = apply(variables, sm, lg.at[:, 0].add(1.0))
    np.testing.assert_array_equal(sm_out2[:, 0], sm_out[:, 0])  # the other class token is not a key
    sm_out3, _ = apply(variables, sm, lg.at[:, 1:].add(1.0))
    assert not np.allclose(sm_out3[:, 0], sm_out[:, 0])  # the other branch's patches are


def test_input_sizes_are_the_image_size():
    model = CrossViT(**SMALL)
    assert model.input_sizes() == InputSizes(32)
    assert 32 in model.input_sizes() and 48 not in model.input_sizes()


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.startswith("crossvit_")])
def test_paper_configs_initialise(name):
    model = CrossViT(**CONFIGS[name])
    side = model.input_sizes().smallest
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    )
    assert shapes["params"]["sm_mlp_head"]["fc"]["kernel"].shape == (CONFIGS[name]["sm_dim"], 1000)


def test_small_recipe_initialises():
    model = CrossViT(**CONFIGS["small"], num_classes=10, channels=1)
    side = model.input_sizes().smallest
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, side, side, 1), jnp.float32)
    )
    assert shapes["params"]["lg_mlp_head"]["fc"]["kernel"].shape == (64, 10)


def test_readme_usage_is_the_readme_config():
    (call,) = [
        node
        for node in ast.walk(ast.parse(readme_python_blocks(README)[0]))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CrossViT"
    ]
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == CONFIGS["readme"]
