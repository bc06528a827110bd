"""Unit tests of the shared layers, validation and conversion helpers."""

import functools
import inspect
import math
import pickle
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vit_layers_flax import (
    PEG,
    Attention,
    BatchNorm,
    Conv,
    ConversionError,
    Dense,
    DepthwiseConv,
    DotProductAttention,
    FeatureInfo,
    FeedForward,
    ImageClassifier,
    InputSizes,
    LayerNorm,
    StateDict,
    TokenEmbedding,
    Transformer,
    TransformerBlock,
    adapt_variables,
    apply_attention,
    apply_blocks,
    attention_weights,
    cast_tuple,
    check_images,
    check_stage_size,
    classifier_paths,
    conv_output_size,
    gelu,
    load_torch_state_dict,
    merge_windows,
    model_variables,
    pair,
    partition_windows,
    pool_tokens,
    posemb_sincos_2d,
    split_qkv,
    stack_layers,
    to_nnx,
    token_map,
    unfold,
)
from vit_layers_flax.testing import (
    build_reference,
    enable_x64,
    load_reference,
    relative_error,
    run_readme_usage,
)

x_tokens = jax.random.normal(jax.random.key(0), (2, 5, 16))


# validation -------------------------------------------------------------------------


def test_pair_and_cast_tuple():
    assert pair(3) == (3, 3) and pair((2, 5)) == (2, 5)
    assert cast_tuple(2, 3) == (2, 2, 2) and cast_tuple((1, 2), 2) == (1, 2)
    with pytest.raises(ValueError):
        pair((1, 2, 3))
    with pytest.raises(ValueError, match="expected 3 values"):
        cast_tuple((1, 2), 3)


@pytest.mark.parametrize(
    "shape, needle",
    [
        ((32, 32, 3), "rank 3 instead of 4"),
        ((1, 3, 32, 32), "channels-first"),
        ((1, 32, 32, 4), "4 channels on the last axis instead of 3"),
        ((1, 32, 33, 3), "spatial size (32, 33) instead of the configured (32, 32)"),
    ],
)
def test_check_images_names_expected_and_received(shape, needle):
    with pytest.raises(ValueError) as info:
        check_images(jax.ShapeDtypeStruct(shape, jnp.float32), channels=3, image_size=(32, 32), name="M")
    message = str(info.value)
    assert "M: expected images of shape (batch, 32, 32, 3)" in message
    assert f"received shape {shape}" in message and needle in message


def test_check_images_divisibility_and_success():
    ok = jax.ShapeDtypeStruct((2, 32, 48, 3), jnp.float32)
    assert check_images(ok, channels=3, multiple_of=(16, 16)) == (2, 32, 48, 3)
    with pytest.raises(ValueError, match=r"not divisible by \(16, 16\)"):
        check_images(jax.ShapeDtypeStruct((2, 30, 48, 3), jnp.float32), channels=3, multiple_of=(16, 16))


def test_check_stage_size_names_stage_window_and_shape():
    images = jax.ShapeDtypeStruct((2, 56, 60, 3), jnp.float32)
    check_stage_size(images, stage=2, size=(14, 14), window=7, name="M")  # fits
    with pytest.raises(ValueError) as info:
        check_stage_size(images, stage=3, size=(7, 16), window=(7, 5), what="local window", name="M")
    message = str(info.value)
    assert message.startswith("M: images of shape (2, 56, 60, 3) give stage 3 a 7x16 feature map")
    assert "local window is 7x5" in message and "expected" in message


# layers -----------------------------------------------------------------------------


def test_posemb_sincos_2d_layout_and_errors():
    pe = posemb_sincos_2d(2, 3, 8)
    assert pe.shape == (6, 8) and pe.dtype == np.float32
    np.testing.assert_allclose(pe[0], [0, 0, 1, 1, 0, 0, 1, 1])  # position (0, 0)
    np.testing.assert_allclose(pe[1, :2], np.sin([1.0, 1e-4]), rtol=1e-5)  # x = 1, omegas 1 and 1/1e4
    with pytest.raises(ValueError, match="divisible by 4"):
        posemb_sincos_2d(2, 2, 10)


def test_layer_norm_derivatives_equal_autodiff_of_the_two_pass_formula():
    # the reference: Flax's LayerNorm with torch's eps and two-pass variance, differentiated by JAX
    flax_norm = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False)
    x = jax.random.normal(jax.random.key(1), (3, 5, 16)) * 3 + 1
    params = {
        "scale": jax.random.normal(jax.random.key(2), (16,)),
        "bias": jax.random.normal(jax.random.key(3), (16,)),
    }
    cotangent = jax.random.normal(jax.random.key(4), x.shape)

    def loss(norm):
        return lambda p, x: jnp.sum(norm.apply({"params": p}, x) * cotangent)

    ours, theirs = loss(LayerNorm()), loss(flax_norm)
    np.testing.assert_allclose(
        LayerNorm().apply({"params": params}, x), flax_norm.apply({"params": params}, x), rtol=1e-5, atol=1e-5
    )
    for a, b in zip(
        jax.tree.leaves(jax.grad(ours, (0, 1))(params, x)),
        jax.tree.leaves(jax.grad(theirs, (0, 1))(params, x)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # forward mode, and forward-over-reverse (Hessian-vector products) work too
    tangent = jax.random.normal(jax.random.key(5), x.shape)
    np.testing.assert_allclose(
        jax.jvp(lambda x: ours(params, x), (x,), (tangent,))[1],
        jax.jvp(lambda x: theirs(params, x), (x,), (tangent,))[1],
        rtol=1e-4,
    )
    hvp = [
        jax.jvp(jax.grad(f, 1), (params, x), (jax.tree.map(jnp.zeros_like, params), tangent))[1]
        for f in (ours, theirs)
    ]
    np.testing.assert_allclose(hvp[0], hvp[1], rtol=1e-3, atol=1e-4)
    # dtypes: Flax's rule (the promoted dtype unless ``dtype`` is given), statistics in float32
    x16 = x.astype(jnp.bfloat16)
    assert LayerNorm().apply({"params": params}, x16).dtype == jnp.float32
    out16 = LayerNorm(dtype=jnp.bfloat16).apply({"params": params}, x16)
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        out16.astype(jnp.float32), flax_norm.apply({"params": params}, x16), rtol=0.05, atol=0.05
    )


@pytest.mark.parity
def test_gelu_is_torchs_exact_gelu():
    import torch

    x = np.linspace(-12, 12, 2001, dtype=np.float32)
    expected = torch.nn.GELU()(torch.from_numpy(x)).numpy()
    ours = np.asarray(gelu(jnp.asarray(x)))
    positive = x >= 0
    np.testing.assert_allclose(ours[positive], expected[positive], rtol=1e-6)
    # for x < 0 torch's formula (ours) takes 1 + erf(x / sqrt(2)) with erf near -1, so both
    # carry an absolute error of a few float32 ulps of 1 times |x| / 2, and their erfs differ
    # by an ulp or two; beyond about -3.8 XLA's erf rounds to -1 (output 0, torch's a few 1e-7)
    np.testing.assert_allclose(ours[~positive], expected[~positive], rtol=0, atol=7e-7)
    np.testing.assert_allclose(ours, nn.gelu(jnp.asarray(x), approximate=False), rtol=0, atol=7e-7)
    # its derivative, by JAX: d/dx = Phi(x) + x phi(x)
    grad = jax.vmap(jax.grad(gelu))(jnp.asarray(x))
    phi = np.exp(-0.5 * x.astype(np.float64) ** 2) / np.sqrt(2 * np.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x.astype(np.float64) / np.sqrt(2)))
    np.testing.assert_allclose(grad, cdf + x * phi, rtol=1e-5, atol=1e-6)
    assert gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


def test_split_qkv_equals_the_reference_chunk_and_head_rearrange():
    qkv = jax.random.normal(jax.random.key(0), (2, 5, 3 * 4 * 6))
    # the reference: qkv.chunk(3, dim=-1), then "b n (h d) -> b h n d" (here b n h d)
    expected = [t.reshape(2, 5, 4, 6) for t in np.split(np.asarray(qkv), 3, axis=-1)]
    for ours, theirs in zip(split_qkv(qkv, heads=4), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_attention_fused_path_equals_explicit_weights():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 3, 8)) for i in range(3))
    fused = jax.nn.dot_product_attention(q, k, v)
    explicit = apply_attention(attention_weights(q, k), v)
    np.testing.assert_allclose(fused, explicit, rtol=1e-5, atol=1e-5)
    assert attention_weights(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16)).dtype == jnp.float32


def test_softmax_attention_with_bias_fused_equals_explicit_and_dropout_only_in_training():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 3, 8)) for i in range(3))
    bias = jax.random.normal(jax.random.key(3), (3, 5, 5))  # one (heads, q, k) bias for every batch row
    attend = DotProductAttention(dropout=0.5)
    fused = attend.apply({}, q, k, v, bias)
    explicit = apply_attention(attention_weights(q, k, bias=bias), v)
    np.testing.assert_allclose(fused, explicit, rtol=1e-5, atol=1e-5)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * 8**-0.5 + bias
    np.testing.assert_allclose(
        attention_weights(q, k, bias=bias), jax.nn.softmax(logits, -1), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(
        attend.apply({}, q, k, v, bias, train=True, rngs={"dropout": jax.random.key(1)}), fused
    )


def test_softmax_attention_takes_values_wider_than_keys():
    q, k = (jax.random.normal(jax.random.key(i), (2, 5, 3, 4)) for i in range(2))
    v = jax.random.normal(jax.random.key(2), (2, 5, 3, 6))
    out = DotProductAttention().apply({}, q, k, v)
    assert out.shape == (2, 5, 3, 6)
    np.testing.assert_allclose(out, apply_attention(attention_weights(q, k), v), rtol=1e-6)


def test_attention_adds_its_bias_and_feed_forward_output_dropout_is_optional():
    attn = Attention(16, heads=2, dim_head=8)
    params = attn.init(jax.random.key(0), x_tokens)
    bias = jnp.zeros((2, 5, 5)).at[:, :, 0].set(-1e9)  # no token may attend to token 0
    masked = attn.apply(params, x_tokens, bias)
    changed = attn.apply(params, x_tokens.at[:, 0].multiply(3.0), bias)
    assert not np.allclose(masked, attn.apply(params, x_tokens))
    # token 0 reaches the others only through attention, which the bias shuts off
    np.testing.assert_allclose(masked[:, 1:], changed[:, 1:], rtol=1e-5, atol=1e-6)
    ff = FeedForward(16, 32, dropout=0.5, output_dropout=False)
    ff_params = ff.init(jax.random.key(0), x_tokens)
    rngs = {"dropout": jax.random.key(1)}
    out = ff.apply(ff_params, x_tokens, train=True, rngs=rngs)
    with_output_dropout = FeedForward(16, 32, dropout=0.5).apply(ff_params, x_tokens, train=True, rngs=rngs)
    assert int((with_output_dropout == 0).sum()) > int((out == 0).sum())


def test_attention_weights_accumulate_in_float64_under_x64():
    with enable_x64():
        q = jax.random.normal(jax.random.key(0), (1, 3, 2, 4), jnp.float64)
        assert attention_weights(q, q).dtype == jnp.float64


def test_partition_and_merge_windows_are_inverse_reshapes():
    x = np.arange(2 * 8 * 12 * 3, dtype=np.float32).reshape(2, 8, 12, 3)
    windows = partition_windows(x, (4, 3))  # a 2x4 grid of 4x3 windows per image
    assert windows.shape == (2 * 2 * 4, 12, 3)
    np.testing.assert_array_equal(windows[1], x[0, :4, 3:6].reshape(12, 3))  # row-major windows
    np.testing.assert_array_equal(windows[4], x[0, 4:, :3].reshape(12, 3))
    np.testing.assert_array_equal(merge_windows(windows, (4, 3), (8, 12)), x)
    np.testing.assert_array_equal(
        partition_windows(x, 4), x.reshape(2, 2, 4, 3, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(12, 16, 3)
    )


def test_attention_identity_out_projection_rule():
    shapes = jax.eval_shape(Attention(16, heads=1, dim_head=16).init, jax.random.key(0), x_tokens)
    assert "to_out" not in shapes["params"]
    shapes = jax.eval_shape(
        Attention(16, heads=1, dim_head=16, project_out=True).init, jax.random.key(0), x_tokens
    )
    assert "to_out" in shapes["params"]


def test_attention_dropout_acts_only_in_training():
    attn = Attention(16, heads=2, dim_head=8, dropout=0.5)
    params = attn.init(jax.random.key(0), x_tokens)
    eval_a = attn.apply(params, x_tokens, rngs={"dropout": jax.random.key(1)})
    eval_b = attn.apply(params, x_tokens, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(eval_a, eval_b)
    train = attn.apply(params, x_tokens, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(train, eval_a)


def test_depthwise_conv_and_peg_shapes():
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 4))
    conv = DepthwiseConv(8, 3, strides=2, padding=1)
    params = conv.init(jax.random.key(1), x)
    assert params["params"]["kernel"].shape == (3, 3, 1, 8)
    assert conv.apply(params, x).shape == (2, 4, 5, 8)
    peg = PEG()
    zero = jax.tree_util.tree_map(jnp.zeros_like, peg.init(jax.random.key(1), x))
    np.testing.assert_array_equal(peg.apply(zero, x), x)  # a zero conv leaves the residual


@pytest.mark.parametrize(
    "dim_out, kernel_size, stride, padding, shape",
    [(4, 3, 1, 1, (2, 7, 9, 4)), (8, 5, 2, 2, (2, 9, 8, 4)), (12, (3, 1), (2, 3), (0, 1), (1, 6, 7, 4))],
)
def test_depthwise_conv_cpu_path_equals_grouped_convolution(dim_out, kernel_size, stride, padding, shape):
    """The CPU's shifted-slice sum, its gradients, and nn.Conv's initial values are those
    of nn.Conv with ``feature_group_count`` (what other backends run)."""
    x = jax.random.normal(jax.random.key(0), shape)
    ours = DepthwiseConv(dim_out, kernel_size, strides=stride, padding=padding)
    ph, pw = pair(padding)
    grouped = nn.Conv(
        dim_out, pair(kernel_size), strides=pair(stride), padding=((ph, ph), (pw, pw)), feature_group_count=4
    )
    variables = ours.init(jax.random.key(1), x)
    assert jax.tree.all(jax.tree.map(np.array_equal, variables, grouped.init(jax.random.key(1), x)))
    variables = jax.tree.map(lambda v: v + jax.random.normal(jax.random.key(2), v.shape), variables)

    def loss(module, variables, x):
        return jnp.sum(jnp.sin(module.apply(variables, x)))

    assert relative_error(ours.apply(variables, x), grouped.apply(variables, x)) < 1e-6
    ours_grads = jax.grad(loss, argnums=(1, 2))(ours, variables, x)
    grouped_grads = jax.grad(loss, argnums=(1, 2))(grouped, variables, x)
    assert relative_error(ours_grads, grouped_grads) < 1e-5
    in_bf16 = DepthwiseConv(dim_out, kernel_size, strides=stride, padding=padding, dtype=jnp.bfloat16)
    out = in_bf16.apply(variables, x)
    assert out.dtype == jnp.bfloat16 and relative_error(out, grouped.apply(variables, x)) < 0.02


@pytest.mark.parametrize(
    "features, kernel_size, stride, padding, shape, use_bias",
    [
        (8, (3, 3), (2, 2), (1, 1), (2, 9, 8, 3), True),  # LeViT's stem, odd and even sides
        (5, (3, 1), (1, 2), (0, 1), (1, 6, 7, 4), False),
        # disjoint windows (kernel <= stride, no padding): reshaped windows times the kernel
        (6, (4, 4), (4, 4), (0, 0), (2, 8, 12, 2), True),  # a patch embedding
        (7, (1, 1), (1, 1), (0, 0), (2, 5, 6, 3), True),  # pointwise (LeViT, PiT)
        (4, (1, 1), (2, 2), (0, 0), (1, 7, 6, 3), False),  # LeViT's shrinking query, odd side
        (3, (3, 3), (3, 3), (0, 0), (2, 11, 9, 2), False),  # Twins' keys: the remainder dropped
        (5, (2, 1), (3, 2), (0, 0), (1, 8, 5, 2), True),  # a last window's stride overhang
    ],
)
def test_conv_cpu_path_equals_flax_conv(features, kernel_size, stride, padding, shape, use_bias):
    """Each of Conv's paths (patches times kernel; disjoint windows), its gradients, and its
    initial values are nn.Conv's."""
    x = jax.random.normal(jax.random.key(0), shape)
    ours = Conv(features, kernel_size, strides=stride, padding=padding, use_bias=use_bias)
    (ph, pw) = padding
    flax_conv = nn.Conv(
        features, kernel_size, strides=stride, padding=((ph, ph), (pw, pw)), use_bias=use_bias
    )
    variables = ours.init(jax.random.key(1), x)
    assert jax.tree.all(jax.tree.map(np.array_equal, variables, flax_conv.init(jax.random.key(1), x)))
    variables = jax.tree.map(lambda v: v + jax.random.normal(jax.random.key(2), v.shape), variables)

    def loss(module, variables, x):
        return jnp.sum(jnp.sin(module.apply(variables, x)))

    assert relative_error(ours.apply(variables, x), flax_conv.apply(variables, x)) < 1e-6
    ours_grads = jax.grad(loss, argnums=(1, 2))(ours, variables, x)
    flax_grads = jax.grad(loss, argnums=(1, 2))(flax_conv, variables, x)
    assert relative_error(ours_grads, flax_grads) < 1e-5
    in_bf16 = Conv(
        features, kernel_size, strides=stride, padding=padding, use_bias=use_bias, dtype=jnp.bfloat16
    )
    out = in_bf16.apply(variables, x)
    assert out.dtype == jnp.bfloat16 and relative_error(out, flax_conv.apply(variables, x)) < 0.02


# conversion -------------------------------------------------------------------------


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="fc")(LayerNorm(name="norm")(x))


def _tiny_state_dict():
    return {
        "norm.weight": np.ones(4, np.float32),
        "norm.bias": np.zeros(4, np.float32),
        "fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fc.bias": np.zeros(3, np.float32),
    }


def _convert_tiny(state_dict):
    sd = StateDict(state_dict)
    params = {"norm": sd.layer_norm("norm"), "fc": sd.linear("fc")}
    return model_variables(sd, {"params": params}, Tiny(), jax.ShapeDtypeStruct((1, 4), jnp.float32))


def test_model_variables_transposes_and_checks():
    variables = _convert_tiny(_tiny_state_dict())
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], np.arange(12).reshape(3, 4).T)
    with pytest.raises(ConversionError, match=r"no key 'fc\.bias'"):
        _convert_tiny({k: v for k, v in _tiny_state_dict().items() if k != "fc.bias"})
    with pytest.raises(ConversionError, match=r"unexpected state_dict keys.*extra\.weight"):
        _convert_tiny({**_tiny_state_dict(), "extra.weight": np.zeros(1)})
    with pytest.raises(ConversionError, match=r"fc/kernel: expected shape \(4, 3\), converted \(5, 3\)"):
        _convert_tiny({**_tiny_state_dict(), "fc.weight": np.zeros((3, 5), np.float32)})


def _transformer(**kwargs):
    block = functools.partial(TransformerBlock, 16, 2, 8, 32, dropout=0.1)
    return Transformer(3, block, **kwargs)


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_transformer_equals_the_loop_with_stacked_layers(remat):
    loop, scanned = _transformer(), _transformer(scan=True, remat=remat)
    variables = loop.init(jax.random.key(0), x_tokens)
    like = jax.eval_shape(scanned.init, jax.random.key(0), x_tokens)
    assert set(like["params"]) == {"layers", "norm"}
    assert like["params"]["layers"]["ff"]["fc1"]["kernel"].shape == (3, 16, 32)
    stacked = stack_layers(variables, like)
    assert jax.tree.structure(stacked) == jax.tree.structure(like)
    np.testing.assert_array_equal(
        stacked["params"]["layers"]["attn"]["to_qkv"]["kernel"][1],
        variables["params"]["layers_1"]["attn"]["to_qkv"]["kernel"],
    )
    out = jax.jit(scanned.apply)(stacked, x_tokens)
    assert relative_error(out, loop.apply(variables, x_tokens)) < 1e-6
    # each scanned block draws its own dropout mask
    train = scanned.apply(stacked, x_tokens, train=True, rngs={"dropout": jax.random.key(1)})
    assert train.shape == x_tokens.shape and not np.allclose(train, out)


def test_stack_layers_passes_a_matching_layout_through_and_rejects_gaps():
    scanned = _transformer(scan=True)
    like = jax.eval_shape(scanned.init, jax.random.key(0), x_tokens)
    variables = scanned.init(jax.random.key(0), x_tokens)
    assert jax.tree.all(jax.tree.map(np.array_equal, stack_layers(variables, like), variables))
    loop = _transformer().init(jax.random.key(0), x_tokens)
    del loop["params"]["layers_1"]
    with pytest.raises(ConversionError, match=r"blocks \[0, 2\] are not numbered 0 to 1"):
        stack_layers(loop, like)


class _FirstBlockApart(nn.Module):
    """A first Dense of its own (``layers_0``), then ``apply_blocks`` numbering on from 1."""

    scan: bool = False

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="layers_0")(x)
        return apply_blocks(lambda name: _Residual(name=name), 3, x, train=train, scan=self.scan, start=1)


class _Residual(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return x + nn.Dense(4)(x)


def test_stack_layers_keeps_a_first_block_of_its_own_and_stacks_the_rest():
    x = jnp.ones((2, 4))
    variables = _FirstBlockApart().init(jax.random.key(0), x)
    assert set(variables["params"]) == {"layers_0", "layers_1", "layers_2", "layers_3"}
    scanned = _FirstBlockApart(scan=True)
    like = jax.eval_shape(scanned.init, jax.random.key(0), x)
    assert set(like["params"]) == {"layers_0", "layers"}
    stacked = stack_layers(variables, like)
    np.testing.assert_array_equal(
        stacked["params"]["layers_0"]["kernel"], variables["params"]["layers_0"]["kernel"]
    )
    np.testing.assert_array_equal(
        stacked["params"]["layers"]["Dense_0"]["kernel"][0],
        variables["params"]["layers_1"]["Dense_0"]["kernel"],
    )
    np.testing.assert_array_equal(
        stacked["params"]["layers"]["Dense_0"]["kernel"][2],
        variables["params"]["layers_3"]["Dense_0"]["kernel"],
    )
    out = scanned.apply(stacked, x)
    assert relative_error(out, _FirstBlockApart().apply(variables, x)) < 1e-6
    del variables["params"]["layers_2"]
    with pytest.raises(ConversionError, match=r"blocks \[1, 3\] are not numbered 1 to 2"):
        stack_layers(variables, like)


class _ScannedStacks(nn.Module):
    """Two blocks, each a scanned Transformer of three layers: nested stacks."""

    scan: bool = False

    @nn.compact
    def __call__(self, x, train=False):
        block = lambda name: _transformer(scan=self.scan, name=name)  # noqa: E731
        return apply_blocks(lambda name: _Wrapped(block, name=name), 2, x, train=train, scan=self.scan)


class _Wrapped(nn.Module):
    make: Any

    @nn.compact
    def __call__(self, x, train=False):
        return self.make("inner")(x, train=train)


def test_stack_layers_puts_the_outer_stack_first_when_stacks_nest():
    loop, scanned = _ScannedStacks(), _ScannedStacks(scan=True)
    variables = loop.init(jax.random.key(0), x_tokens)
    like = jax.eval_shape(scanned.init, jax.random.key(0), x_tokens)
    assert like["params"]["layers"]["inner"]["layers"]["ff"]["fc1"]["kernel"].shape == (2, 3, 16, 32)
    stacked = stack_layers(variables, like)
    assert jax.tree.structure(stacked) == jax.tree.structure(like)
    np.testing.assert_array_equal(
        stacked["params"]["layers"]["inner"]["layers"]["ff"]["fc1"]["kernel"][1, 2],
        variables["params"]["layers_1"]["inner"]["layers_2"]["ff"]["fc1"]["kernel"],
    )
    out = jax.jit(scanned.apply)(stacked, x_tokens)
    assert relative_error(out, loop.apply(variables, x_tokens)) < 1e-6


def test_conversion_error_is_a_value_error():
    assert issubclass(ConversionError, ValueError)


def test_load_safetensors(tmp_path):
    from safetensors.numpy import save_file

    save_file(_tiny_state_dict(), str(tmp_path / "tiny.safetensors"))
    loaded = load_torch_state_dict(tmp_path / "tiny.safetensors")
    np.testing.assert_array_equal(loaded["fc.weight"], _tiny_state_dict()["fc.weight"])


def test_readme_runner_requires_a_block(tmp_path):
    (tmp_path / "README.md").write_text("# nothing to run\n")
    with pytest.raises(AssertionError, match="no ```python block"):
        run_readme_usage(tmp_path / "README.md")


def test_readme_usage_runs_as_written():
    namespace = run_readme_usage(Path(__file__).parents[1] / "README.md")[0]
    assert namespace["tokens"].shape == (2, 16, 64)


# against the reference --------------------------------------------------------------


@pytest.mark.parity
def test_load_torch_checkpoint_is_weights_only(tmp_path):
    import torch

    torch.save(
        {"state_dict": {k: torch.from_numpy(v) for k, v in _tiny_state_dict().items()}}, tmp_path / "a.pt"
    )
    loaded = load_torch_state_dict(tmp_path / "a.pt")
    np.testing.assert_array_equal(loaded["fc.weight"], _tiny_state_dict()["fc.weight"])

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled arbitrary code",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(pickle.UnpicklingError):
        load_torch_state_dict(tmp_path / "evil.pt")


@pytest.mark.parity
def test_attention_matches_reference():
    torch_attn = build_reference("vit", "Attention", dict(dim=16, heads=2, dim_head=8))
    sd = StateDict(torch_attn.state_dict())
    from vit_layers_flax import attention_params

    params = attention_params(sd, "")
    x = np.asarray(x_tokens)
    ours = Attention(16, heads=2, dim_head=8).apply({"params": params}, x)
    import torch

    theirs = torch_attn(torch.from_numpy(x)).detach().numpy()
    assert relative_error(ours, theirs) < 1e-5


@pytest.mark.parity
def test_peg_and_channel_layer_norm_match_reference():
    import torch

    x = np.asarray(jax.random.normal(jax.random.key(3), (2, 5, 6, 8)))
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    ref_peg = build_reference("scalable_vit", "PEG", dict(dim=8))
    params = {"proj": StateDict(ref_peg.state_dict()).conv2d("proj")}
    ours = PEG().apply({"params": params}, x)
    assert relative_error(ours, ref_peg(x_nchw).detach().numpy().transpose(0, 2, 3, 1)) < 1e-5

    ref_norm = build_reference("scalable_vit", "ChanLayerNorm", dict(dim=8))
    params = StateDict(ref_norm.state_dict()).chan_layer_norm("")
    ours = LayerNorm().apply({"params": params}, x)
    assert relative_error(ours, ref_norm(x_nchw).detach().numpy().transpose(0, 2, 3, 1)) < 1e-5


@pytest.mark.parity
def test_posemb_matches_reference():
    ref = load_reference("simple_vit").posemb_sincos_2d(h=3, w=5, dim=16).numpy()
    np.testing.assert_allclose(posemb_sincos_2d(3, 5, 16), ref, rtol=1e-6, atol=1e-6)


#: T2T-ViT's and PiT's settings: padded, overlapping, odd kernels with a dropped last row/column
UNFOLD_CASES = [
    (7, 4, 2, (2, 16, 20, 3)),
    (3, 2, 1, (1, 8, 8, 5)),
    (2, 2, 1, (1, 6, 7, 2)),
    (3, 1, 0, (1, 5, 5, 4)),
    (5, 2, 0, (2, 21, 20, 2)),
    (3, 2, 1, (1, 8, 7, 5)),
]


@pytest.mark.parametrize("kernel_size, stride, padding, shape", UNFOLD_CASES)
def test_unfold_matches_conv_general_dilated_patches(kernel_size, stride, padding, shape):
    """XLA's patch extraction flattens features as (c, kh, kw) too; ours gathers exactly."""
    x = np.asarray(jax.random.normal(jax.random.key(0), shape, jnp.float32))
    patches = jax.lax.conv_general_dilated_patches(
        x,
        (kernel_size, kernel_size),
        (stride, stride),
        ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "OIHW", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    expected = patches.reshape(shape[0], -1, patches.shape[-1])
    np.testing.assert_array_equal(unfold(x, kernel_size, stride, padding), expected)


def test_unfold_feature_order_is_channel_major():
    x = jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(1, 2, 2, 3)  # value = 3 * (2 * h + w) + c
    out = unfold(x, 2)  # one window covering the image
    expected = [3 * (2 * kh + kw) + c for c in range(3) for kh in range(2) for kw in range(2)]
    np.testing.assert_array_equal(out[0, 0], expected)


@pytest.mark.parity
@pytest.mark.parametrize("kernel_size, stride, padding, shape", UNFOLD_CASES)
def test_unfold_matches_torch(kernel_size, stride, padding, shape):
    import torch

    x = np.asarray(jax.random.normal(jax.random.key(0), shape, jnp.float32))
    nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    expected = torch.nn.functional.unfold(nchw, kernel_size, stride=stride, padding=padding).transpose(1, 2)
    np.testing.assert_array_equal(unfold(x, kernel_size, stride, padding), expected.numpy())


def test_batch_norm_train_uses_batch_statistics_and_eval_the_running_ones():
    x = jax.random.normal(jax.random.key(0), (4, 3, 5, 6)) * 2.0 + 1.0
    bn = BatchNorm()
    variables = bn.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, variables["batch_stats"]) == {"mean": (6,), "var": (6,)}
    out, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out.mean((0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std((0, 1, 2)), 1, atol=1e-3)
    n = x.size // 6
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(
        updates["batch_stats"]["var"], 0.9 + 0.1 * x.var((0, 1, 2)) * n / (n - 1), rtol=1e-5
    )
    eval_out = bn.apply(variables, x)  # running averages: mean 0, var 1
    np.testing.assert_allclose(eval_out, x / np.sqrt(1 + 1e-5), rtol=1e-5)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 1, 1, 6\)"):
        bn.apply(variables, x[:1, :1, :1], train=True, mutable=["batch_stats"])


def test_conv_readers_reject_weights_of_the_wrong_rank():
    sd = StateDict({"c.weight": np.zeros((4, 3, 3, 3), np.float32), "p.weight": np.zeros((4, 3), np.float32)})
    assert sd.conv2d("c", bias=False)["kernel"].shape == (3, 3, 3, 4)
    with pytest.raises(ConversionError, match=r"p\.weight: expected shape \(out, in, 1, 1\)"):
        sd.pointwise("p", bias=False)
    with pytest.raises(ConversionError, match="received shape"):
        sd.conv2d("p", bias=False)


@pytest.mark.parity
def test_batch_norm_matches_torch_in_train_and_eval():
    import torch

    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 7, 6)) * 3.0 - 1.0)
    reference = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5), reference.bias.uniform_(-0.5, 0.5)
        reference.running_mean.uniform_(-1, 1), reference.running_var.uniform_(0.5, 2)
    params, stats = StateDict({k: v.clone() for k, v in reference.state_dict().items()}).batch_norm("")
    variables = {"params": params, "batch_stats": stats}
    nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        expected_eval = reference.eval()(nchw).numpy().transpose(0, 2, 3, 1)
        expected_train = reference.train()(nchw).numpy().transpose(0, 2, 3, 1)
    bn = BatchNorm()
    assert relative_error(bn.apply(variables, x), expected_eval) < 1e-6
    out, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    assert relative_error(out, expected_train) < 1e-6
    assert relative_error(updates["batch_stats"]["mean"], reference.running_mean.numpy()) < 1e-6
    assert relative_error(updates["batch_stats"]["var"], reference.running_var.numpy()) < 1e-6


@pytest.mark.parametrize("shape", [(6, 8), (2, 3, 8), (2, 3, 4, 8)])
def test_dense_equals_flax_dense_on_any_leading_axes(shape):
    """The shared Dense: flax's parameters and outputs, one 2-D product whatever the leading axes."""
    x = jax.random.normal(jax.random.key(0), shape)
    ours, theirs = Dense(5), nn.Dense(5)
    variables = theirs.init(jax.random.key(1), x)
    assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(variables)
    out = ours.apply(variables, x)
    assert out.shape == (*shape[:-1], 5)
    np.testing.assert_allclose(out, theirs.apply(variables, x), rtol=1e-6, atol=1e-6)
    grads = [jax.grad(lambda v, m=m: (m.apply(v, x) ** 2).sum())(variables) for m in (ours, theirs)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    lowered = jax.jit(ours.apply).lower(variables, x).as_text()
    assert lowered.count("dot_general") == 1 and "contracting_dims = [1] x [0]" in lowered


class _CountedBlock(nn.Module):
    """A residual Dense that counts how often it is traced (``traces``, per class)."""

    traces = 0

    @nn.compact
    def __call__(self, x, train=False):
        type(self).traces += 1
        return x + nn.Dense(x.shape[-1])(x)


class _CountedStack(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return apply_blocks(lambda name: _CountedBlock(name=name), 5, x, train=train, scan=True)


@pytest.mark.skipif(
    "check_constancy_invariants" not in inspect.signature(nn.scan).parameters,
    reason="Flax < 0.10.3 always traces a scanned block twice",
)
def test_scanned_blocks_are_traced_once_per_call():
    """Flax's nn.scan traces its body a second time unless told it broadcasts nothing:
    apply_blocks tells it, so a deep stack costs one trace of its block, in the forward
    pass and in the gradient alike."""
    x = jnp.ones((2, 4))
    variables = jax.eval_shape(_CountedStack().init, jax.random.key(0), x)
    _CountedBlock.traces = 0
    jax.make_jaxpr(_CountedStack().apply)(variables, x)
    assert _CountedBlock.traces == 1
    _CountedBlock.traces = 0
    jax.make_jaxpr(jax.grad(lambda v: _CountedStack().apply(v, x).sum()))(variables)
    assert _CountedBlock.traces == 1


# the ViT stem, input sizes, the stacking primitive -------------------------------------


@pytest.mark.parametrize("num_class_tokens", [0, 1, 2])
def test_token_embedding_prepends_class_tokens_and_adds_positions(num_class_tokens):
    stem = TokenEmbedding(num_class_tokens, dropout=0.5)
    variables = stem.init(jax.random.key(0), x_tokens)
    params = variables["params"]
    assert params["pos_embedding"].shape == (num_class_tokens + 5, 16)
    assert ("cls_token" in params) == bool(num_class_tokens)
    out = stem.apply(variables, x_tokens)
    expected = x_tokens
    if num_class_tokens:
        cls = jnp.broadcast_to(params["cls_token"], (2, num_class_tokens, 16))
        expected = jnp.concatenate([cls, x_tokens], axis=1)
    np.testing.assert_allclose(out, expected + params["pos_embedding"], rtol=1e-6)
    train = stem.apply(variables, x_tokens, train=True, rngs={"dropout": jax.random.key(1)})
    assert float((train == 0).mean()) > 0.2  # dropout acts in training only


def test_pool_tokens():
    np.testing.assert_array_equal(pool_tokens(x_tokens, "cls"), x_tokens[:, 0])
    np.testing.assert_allclose(pool_tokens(x_tokens, "mean"), x_tokens.mean(axis=1))
    with pytest.raises(ValueError, match="'cls' or 'mean'"):
        pool_tokens(x_tokens, "max")


def test_input_sizes_and_conv_output_size():
    fixed, pyramid = InputSizes(224), InputSizes(32, step=16)
    assert 224 in fixed and 225 not in fixed and 240 not in fixed
    assert 32 in pyramid and 64 in pyramid and 40 not in pyramid and 16 not in pyramid
    assert pyramid.smallest == 32 and pyramid.smallest_shape == (32, 32)
    assert (32, 48) in pyramid and (32, 40) not in pyramid
    wide = InputSizes.fixed((32, 48))
    assert (32, 48) in wide and 32 not in wide and wide.smallest_shape == (32, 48)
    assert InputSizes.fixed(7) == InputSizes(7)
    assert conv_output_size(224, 16, 16) == 14
    assert conv_output_size(7, 3, 2, 1) == 4  # torch's floor((7 + 2 - 3) / 2) + 1


class _ScaledBlock(nn.Module):
    @nn.compact
    def __call__(self, x, shift, scale, keep, *, train=False):
        y = nn.Dropout(0.5)(Dense(x.shape[-1])(x) + shift, deterministic=not train)
        return x + keep * scale * y


@pytest.mark.parametrize("remat", [False, True])
def test_apply_blocks_per_layer_inputs_are_the_same_in_the_loop_and_the_scan(remat):
    """Row i of each per-layer input reaches block i, with and without scan and remat."""

    class Stack(nn.Module):
        scan: bool

        @nn.compact
        def __call__(self, x, *, train=False):
            scales = jnp.asarray([1.0, 0.5, 0.25])
            keep = jnp.asarray([1.0, 0.0, 1.0])
            make = lambda name: _ScaledBlock(name=name)  # noqa: E731
            return apply_blocks(
                make,
                3,
                x,
                jnp.float32(0.1),
                train=train,
                scan=self.scan,
                remat=remat,
                per_layer=(scales, keep),
            )

    loop, scanned = Stack(scan=False), Stack(scan=True)
    variables = loop.init(jax.random.key(0), x_tokens)
    assert set(variables["params"]) == {"layers_0", "layers_1", "layers_2"}
    stacked = stack_layers(variables, jax.eval_shape(scanned.init, jax.random.key(0), x_tokens))
    assert stacked["params"]["layers"]["Dense_0"]["kernel"].shape == (3, 16, 16)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(
            scanned.apply(stacked, x_tokens), loop.apply(variables, x_tokens), rtol=1e-5, atol=1e-6
        )
        grads = jax.grad(lambda v: loop.apply(v, x_tokens).sum())(variables)
    # block 1 is switched off by its keep flag: its parameters get no gradient
    assert not np.any(np.asarray(grads["params"]["layers_1"]["Dense_0"]["kernel"]))
    assert np.any(np.asarray(grads["params"]["layers_2"]["Dense_0"]["kernel"]))


def test_depthwise_conv_rejects_channels_that_do_not_divide_features():
    with pytest.raises(ValueError, match=r"features=6.*\(2, 5, 5, 4\)"):
        DepthwiseConv(6, 3).init(jax.random.key(0), jnp.zeros((2, 5, 5, 4)))


def test_convolutions_lower_to_the_platform_s_path():
    """The CPU-tuned lowering is chosen by the platform the program is compiled for."""
    x = jnp.zeros((1, 6, 6, 4))
    conv = DepthwiseConv(4, 3, padding=1)
    variables = conv.init(jax.random.key(0), x)
    hlo = jax.jit(conv.apply).lower(variables, x).as_text()
    assert ("feature_group_count" in hlo) == (jax.default_backend() != "cpu")


def test_token_embedding_with_more_positions_than_tokens_adds_the_first_rows():
    """vit-pytorch's PatchMerger ViT allocates one position more than it uses."""
    stem = TokenEmbedding(0, num_positions=7)
    variables = stem.init(jax.random.key(0), x_tokens)
    pos = variables["params"]["pos_embedding"]
    assert pos.shape == (7, 16)
    np.testing.assert_allclose(stem.apply(variables, x_tokens), x_tokens + pos[:5], rtol=1e-6)
    with pytest.raises(ValueError, match="4 positions for 5 tokens"):
        TokenEmbedding(0, num_positions=4).init(jax.random.key(0), x_tokens)


# the model interface and the NNX bridge ----------------------------------------------


class _TinyClassifier(ImageClassifier):
    """Dense -> BatchNorm -> dropout -> mean pool -> classifier: the pieces the bridge carries."""

    num_classes: int

    def input_sizes(self) -> InputSizes:
        return InputSizes(minimum=4, step=4)

    @property
    def num_features(self) -> int:
        return 8

    def feature_maps(self):
        return (FeatureInfo(8, (1, 1), "Dense_0"),)

    @nn.compact
    def __call__(self, x, *, train=False, pre_logits=False, return_features=False):
        x = Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        x = nn.Dropout(0.5)(x, deterministic=not train)
        if return_features:
            return self.select_features([x])
        return self.classify(x.mean(axis=(1, 2)), pre_logits=pre_logits)


def test_nnx_train_mode_draws_dropout_and_updates_batch_stats():
    model = _TinyClassifier(3)
    images = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    wrapped = to_nnx(model, rngs=nnx.Rngs(params=0, dropout=1))
    stats = lambda: [np.asarray(a) for a in jax.tree.leaves(nnx.state(wrapped, nnx.BatchStat))]  # noqa: E731
    before = stats()
    np.testing.assert_array_equal(wrapped(images), wrapped(images))
    assert all(np.array_equal(a, b) for a, b in zip(before, stats(), strict=True))
    first, second = wrapped(images, train=True), wrapped(images, train=True)
    assert not np.array_equal(first, second), "train mode drew the same dropout mask twice"
    assert not any(np.array_equal(a, b) for a, b in zip(before, stats(), strict=True))
    assert wrapped(images, pre_logits=True).shape == (2, 8)
    assert wrapped(images, return_features=True)[0].shape == (2, 4, 4, 8)


def test_nnx_rejects_variables_of_another_model():
    model = _TinyClassifier(3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))
    wrong = adapt_variables(variables, _TinyClassifier(5))
    with pytest.raises(ConversionError, match=r"mlp_head/kernel: expected \(8, 3\), received \(8, 5\)"):
        to_nnx(model, rngs=nnx.Rngs(0), variables=wrong)


def test_adapt_variables_and_out_indices():
    model = _TinyClassifier(3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))
    assert classifier_paths(model) == {"params/mlp_head/kernel", "params/mlp_head/bias"}
    adapted = adapt_variables(variables, _TinyClassifier(5), rng=jax.random.key(1))
    assert adapted["params"]["mlp_head"]["kernel"].shape == (8, 5)
    np.testing.assert_array_equal(
        adapted["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["kernel"]
    )
    with pytest.raises(ValueError, match=r"out_indices \(1,\) expected in \[-1, 1\)"):
        _ = _TinyClassifier(3, out_indices=(1,)).feature_info


def test_token_map_drops_prefix_tokens():
    x = jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3)
    grid = token_map(x, (2, 3), prefix=1)
    np.testing.assert_array_equal(grid[:, 0, 1], x[:, 2])
    with pytest.raises(
        ValueError, match=r"expected \(batch, 0 \+ 2 \* 3, dim\) tokens, received shape \(2, 7, 3\)"
    ):
        token_map(x, (2, 3))
