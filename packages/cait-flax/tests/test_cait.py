import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cait_flax import CONFIGS, CaiT, LayerScale, from_vit_pytorch, initial_layer_scale, layer_keep_mask

from vit_layers_flax import stack_layers
from vit_layers_flax.testing import (
    ContractSuite,
    ModelCase,
    build_reference,
    load_reference,
    random_variables,
    readme_python_blocks,
)

SMALL = dict(
    image_size=32,
    patch_size=8,
    num_classes=10,
    dim=64,
    depth=2,
    cls_depth=1,
    heads=4,
    dim_head=16,
    mlp_dim=128,
)


def no_layer_dropout(kwargs):
    """The reference's constructor keywords for a case: vit-pytorch's ``layer_dropout`` drops
    layers at random even in eval mode, so its parity model is built with ``layer_dropout=0``.
    That is the same eval-mode model as ours with the case's ``layer_dropout``, because our
    layer dropout acts only when ``train=True``. ``channels`` is ours only (see
    :func:`widen_reference`)."""
    return {k: v for k, v in kwargs.items() if k != "channels"} | {"layer_dropout": 0.0}


CASES = [
    ModelCase(
        "readme",
        CONFIGS["readme"],
        (1, 256, 256, 3),
        reference_kwargs=no_layer_dropout(CONFIGS["readme"]),
        readme_config=True,
    ),
    ModelCase(
        "dropout",
        dict(SMALL, dropout=0.1, emb_dropout=0.1),
        (2, 32, 32, 3),
        bad_spatial=[(33, 32), (40, 32), (32, 24)],
    ),
    ModelCase(
        "layer-dropout-deep-cls-4ch",
        dict(SMALL, depth=1, cls_depth=3, layer_dropout=0.5, channels=4, num_classes=7),
        (2, 32, 32, 4),
        reference_kwargs=no_layer_dropout(dict(SMALL, depth=1, cls_depth=3, num_classes=7)),
    ),
    ModelCase(
        # heads == 1 and dim_head == dim: unlike ViT, CaiT keeps its output projection
        "one-head-gray",
        dict(
            image_size=24,
            patch_size=6,
            num_classes=5,
            dim=32,
            depth=2,
            cls_depth=1,
            heads=1,
            dim_head=32,
            mlp_dim=64,
            channels=1,
        ),
        (2, 24, 24, 1),
        reference_kwargs=no_layer_dropout(
            dict(
                image_size=24,
                patch_size=6,
                num_classes=5,
                dim=32,
                depth=2,
                cls_depth=1,
                heads=1,
                dim_head=32,
                mlp_dim=64,
            )
        ),
    ),
]


def widen_reference(model, channels: int, generator=None):
    """vit-pytorch's CaiT fixes 3 input channels only through ``patch_dim = 3 * patch_size**2``
    (its ``Rearrange`` takes any channel count), so the reference for ``channels=C`` is the
    same model with the patch embedding's first LayerNorm and Linear widened to
    ``C * patch_size**2`` inputs — what vit-pytorch's ViT builds for ``channels=C``. With a
    ``generator`` the new weights are perturbed as :func:`build_reference` perturbs the rest."""
    import torch

    if channels == 3:
        return model
    norm, linear = model.to_patch_embedding[1], model.to_patch_embedding[2]
    patch_dim = channels * norm.normalized_shape[0] // 3
    device = linear.weight.device
    model.to_patch_embedding[1] = torch.nn.LayerNorm(patch_dim, device=device)
    model.to_patch_embedding[2] = torch.nn.Linear(patch_dim, linear.out_features, device=device)
    if generator is not None:
        with torch.no_grad():
            for p in [*model.to_patch_embedding[1].parameters(), *model.to_patch_embedding[2].parameters()]:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def temper_talking_heads(model):
    """Scale the reference's talking-heads matrices by ``heads ** -0.5`` (in place).

    The reference initialises them with ``torch.randn`` (std 1), and at that init the
    README-size model is chaotic: each of its 14 attention blocks amplifies rounding error
    about twofold, so the reference run in float32 differs from itself run in float64 by
    ~5e-2 relative, and no float32 port can agree with it to 1e-4. With variance-preserving
    matrices it is well conditioned and float32 parity is meaningful again. Exactness with
    the reference's own init is checked in float64 by
    ``test_readme_config_matches_reference_in_float64``.
    """
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("mix_heads_pre_attn", "mix_heads_post_attn")):
                p.mul_(p.shape[0] ** -0.5)
    return model


class TestCaiT(ContractSuite):
    model_cls = CaiT
    convert = staticmethod(from_vit_pytorch)
    reference = ("cait", "CaiT")
    cases = CASES
    readme = Path(__file__).parents[1] / "README.md"
    readme_shapes = {"output": (1, 1000), "embeddings": (2, 64), "maps": [(2, 4, 4, 64), (2, 4, 4, 64)]}

    @pytest.fixture(scope="class")
    @classmethod
    def reference_model(cls, parity_case):
        import torch

        model = build_reference("cait", "CaiT", parity_case.torch_kwargs)
        if parity_case.readme_config:  # the small cases are well conditioned at the reference's init
            temper_talking_heads(model)
        channels = parity_case.kwargs.get("channels", 3)
        return widen_reference(model, channels, torch.Generator().manual_seed(2)).eval()

    def _zeros_state_dict(self, case):
        import torch

        with torch.device("meta"):
            model = load_reference("cait").CaiT(**case.torch_kwargs)
        model = widen_reference(model, case.kwargs.get("channels", 3))
        return {k: np.zeros(tuple(v.shape), np.float32) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=30), "must be divisible by patch_size"),
        (dict(image_size=(32, 32)), "must be positive ints"),
        (dict(cls_depth=0), "must be positive"),
        (dict(channels=0), "must be positive"),
        (dict(layer_dropout=1.0), r"layer_dropout must be in \[0, 1\)"),
        (dict(layer_dropout=-0.1), r"layer_dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CaiT(**{**SMALL, **kwargs})


def test_layer_scale_init_depends_on_the_block_number():
    numbers = (1, 18, 19, 24, 25, 40)
    assert [initial_layer_scale(n) for n in numbers] == [0.1, 0.1, 1e-5, 1e-5, 1e-6, 1e-6]
    for number in (1, 20, 30):
        layer_scale = LayerScale()
        branch = jnp.ones((1, 2, 8))
        scale = layer_scale.init(jax.random.key(0), branch, initial_layer_scale(number))["params"]["scale"]
        np.testing.assert_array_equal(scale, np.full(8, initial_layer_scale(number), np.float32))


def test_layer_keep_mask_never_drops_every_layer():
    """Moved here from vit-layers-flax with ``layer_keep_mask`` (CaiT alone uses it)."""
    masks = jax.vmap(lambda k: layer_keep_mask(k, 3, 0.9))(jax.random.split(jax.random.key(0), 2000))
    assert bool(masks.any(axis=1).all())
    assert 0.05 < float(masks.mean()) < 0.5  # mostly dropped, one rescued
    assert bool(layer_keep_mask(jax.random.key(0), 4, 0.0).all())
    with pytest.raises(ValueError, match="layer dropout rate"):
        layer_keep_mask(jax.random.key(0), 4, 1.0)


def test_scan_keeps_each_blocks_layer_scale_init_and_layer_dropout():
    """The scanned stack initialises every position as the loop does (0.1 up to 18, 1e-5
    beyond) and, given the same rng, drops the same blocks in training."""
    kwargs = {**SMALL, "dim": 16, "heads": 2, "dim_head": 8, "mlp_dim": 16, "depth": 20, "layer_dropout": 0.5}
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    loop, scanned = CaiT(**kwargs), CaiT(**kwargs, scan=True)
    params = loop.init(jax.random.key(0), images)["params"]
    stacked = scanned.init(jax.random.key(0), images)["params"]
    scales = stacked["patch_transformer"]["layers"]["attn_scale"]["scale"]
    expected = np.stack([np.full(16, initial_layer_scale(n), np.float32) for n in range(1, 21)])
    np.testing.assert_array_equal(scales, expected)
    np.testing.assert_array_equal(stacked["patch_transformer"]["layers"]["ff_scale"]["scale"], expected)

    as_scanned = stack_layers({"params": params}, {"params": stacked})
    rngs = {"dropout": jax.random.key(3)}
    ours = scanned.apply(as_scanned, images, train=True, rngs=rngs)
    np.testing.assert_allclose(
        ours, loop.apply({"params": params}, images, train=True, rngs=rngs), rtol=1e-5, atol=1e-6
    )
    # and the mask matters: another rng drops other blocks
    assert not np.allclose(
        ours, scanned.apply(as_scanned, images, train=True, rngs={"dropout": jax.random.key(4)})
    )


@pytest.mark.parity
def test_layer_scale_init_matches_reference():
    import torch

    reference = load_reference("cait").LayerScale
    for number in (1, 18, 19, 24, 25, 40):
        expected = reference(8, torch.nn.Identity(), depth=number).scale.detach().numpy().reshape(-1)
        np.testing.assert_allclose(np.full(8, initial_layer_scale(number), np.float32), expected, rtol=0)


def test_one_head_keeps_the_output_projection():
    model = CaiT(**{**SMALL, "heads": 1, "dim_head": SMALL["dim"]})
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    attn = shapes["params"]["cls_transformer"]["layers_0"]["attn"]
    assert attn["to_out"]["kernel"].shape == (64, 64)
    assert attn["mix_heads_pre_attn"].shape == attn["mix_heads_post_attn"].shape == (1, 1)


def test_layer_dropout_drops_whole_blocks_in_training_only():
    """Deliberate difference from the reference: blocks are dropped only with ``train=True``.

    Every train-mode output must equal the eval output of the same weights with the
    LayerScales of some set of blocks zeroed (a zero scale removes exactly that block's two
    residual branches), with at least one block kept per stack; the set depends on the
    'dropout' rng, and some blocks really are dropped. Eval ignores the rng and keeps all.
    """
    import itertools

    kwargs = dict(
        image_size=16,
        patch_size=8,
        num_classes=3,
        dim=32,
        depth=2,
        cls_depth=2,
        heads=2,
        dim_head=8,
        mlp_dim=32,
        layer_dropout=0.7,
    )
    model = CaiT(**kwargs)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    variables = random_variables(model, x)  # no init compile; LayerScales around 0, not 0.1
    forward = jax.jit(
        lambda v, rng, train: model.apply(v, x, train=train, rngs={"dropout": rng}), static_argnums=2
    )

    def without(dropped):
        params = jax.tree.map(lambda a: a, variables["params"])
        for stack, i in dropped:
            for branch in ("attn_scale", "ff_scale"):
                params[stack][f"layers_{i}"][branch]["scale"] = jnp.zeros_like(
                    params[stack][f"layers_{i}"][branch]["scale"]
                )
        return {"params": params}

    # a dropped set per stack: none, {0} or {1} (never both: one block is always kept)
    choices = [(), (0,), (1,)]
    candidates = {
        (p, c): forward(
            without([("patch_transformer", i) for i in p] + [("cls_transformer", i) for i in c]),
            jax.random.key(0),
            False,
        )
        for p, c in itertools.product(choices, choices)
    }

    evals = [forward(variables, jax.random.key(s), False) for s in (1, 2)]
    np.testing.assert_array_equal(evals[0], evals[1])
    np.testing.assert_allclose(evals[0], candidates[((), ())], rtol=1e-6, atol=1e-6)

    seen = set()
    for seed in range(8):
        out = forward(variables, jax.random.key(seed), True)
        np.testing.assert_array_equal(out, forward(variables, jax.random.key(seed), True))
        matches = [k for k, c in candidates.items() if np.allclose(out, c, rtol=1e-5, atol=1e-6)]
        assert len(matches) == 1, f"rng {seed}: train output matches {matches} of the per-stack drop sets"
        seen.add(matches[0])
    assert len(seen) > 1, "train-mode layer dropout does not depend on the 'dropout' rng"
    assert seen - {((), ())}, "train-mode layer dropout never dropped a block"


@pytest.mark.parity
def test_readme_config_matches_reference_in_float64():
    """The README configuration with the reference's own (untempered) perturbed weights, both
    sides in float64: agreement to rounding shows the port is exact, whatever the
    conditioning of the randomly initialised model (see :func:`temper_talking_heads`)."""
    import torch

    from vit_layers_flax.testing import enable_x64, reference_outputs, relative_error

    readme = next(c for c in CASES if c.readme_config)
    reference = build_reference("cait", "CaiT", readme.torch_kwargs).double()
    images = np.asarray(jax.random.normal(jax.random.key(7), readme.input_shape, jnp.float32), np.float64)
    with enable_x64():
        model = CaiT(**readme.kwargs, dtype=jnp.float64, param_dtype=jnp.float64)
        variables = from_vit_pytorch(reference.state_dict(), model)
        ours = np.asarray(jax.jit(model.apply)(variables, images))
    with torch.no_grad():
        theirs = reference_outputs(reference, images)
    assert ours.dtype == np.float64
    assert relative_error(ours, theirs) < 1e-8


@pytest.mark.parametrize("name", [name for name in CONFIGS if name.startswith("cait_")])
def test_paper_configurations_build(name):
    model = CaiT(**CONFIGS[name])
    side = model.input_sizes().smallest
    assert side == 224
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    )
    assert shapes["params"]["mlp_head"]["fc"]["kernel"].shape == (CONFIGS[name]["dim"], 1000)


def test_input_sizes_smallest_works():
    """CaiT is fixed-size: the contract suite checks that other sizes are refused."""
    model = CaiT(**SMALL)
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
        n for n in ast.walk(usage) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "CaiT"
    )
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == CONFIGS["readme"]


@pytest.mark.parametrize("scan", [False, True])
def test_remat_keeps_layer_dropout_training_outputs_and_gradients(scan):
    """The per-layer inputs (LayerScale initial values, layer-dropout flags) pass through
    ``remat`` in the loop and in the scan: the same train-mode loss and gradients."""
    kwargs = dict(SMALL, image_size=16, dim=16, heads=2, dim_head=8, mlp_dim=16, depth=3, cls_depth=2)
    kwargs["layer_dropout"] = 0.5
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    plain, rematted = CaiT(**kwargs), CaiT(**kwargs, remat=True, scan=scan)
    params = random_variables(plain, images)["params"]
    like = jax.eval_shape(rematted.init, jax.random.key(0), images)
    stacked = stack_layers({"params": params}, like)["params"]

    def loss(model, params):
        rngs = {"dropout": jax.random.key(5)}
        return jnp.sum(jnp.sin(model.apply({"params": params}, images, train=True, rngs=rngs)))

    expected = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(rematted, p)))(stacked)
    np.testing.assert_allclose(value, expected[0], rtol=1e-5)
    expected_grads = stack_layers({"params": expected[1]}, like)["params"]
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
