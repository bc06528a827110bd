"""The contract every vit-flax model package meets, as one pytest suite.

A package's test file subclasses :class:`ContractSuite` with its model class, its
converter, the vit-pytorch file and class it ports, and a list of :class:`ModelCase`
configurations. Tests marked ``parity`` need torch and vit-pytorch; the rest need only
JAX. Each case's model is initialised and compiled once per test class.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_layers_flax.conversion import ConversionError, stack_layers
from vit_layers_flax.interface import ImageClassifier, adapt_variables, classifier_paths
from vit_layers_flax.nnx import to_nnx
from vit_layers_flax.testing.readme import run_readme_usage
from vit_layers_flax.testing.reference import (
    build_reference,
    load_reference,
    parameter_count,
    reference_outputs,
)

#: float32 eval logits must agree with vit-pytorch to this relative error
#: (max absolute difference over the largest reference magnitude).
PARITY_RTOL = 1e-4
#: a bfloat16-compute forward must stay this close (same measure) to float32.
BF16_RTOL = 0.1


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """One model configuration for the contract suite.

    Attributes:
      id: short name shown in test ids.
      kwargs: constructor keywords of the Flax model.
      input_shape: NHWC shape of the test batch.
      reference_kwargs: constructor keywords of the vit-pytorch model; ``None`` means the
        same as ``kwargs``.
      output_shape: expected output shape (a tuple of shapes for several outputs);
        ``None`` means ``(batch, kwargs['num_classes'])``.
      bad_spatial: ``(height, width)`` sizes the model must reject; ``None`` means
        ``[(H + 1, W)]``.
      readme_config: the package README's full-size configuration: only parity, the
        parameter count and the interface's shapes run on it (the other checks run on the
        small cases).
    """

    id: str
    kwargs: Mapping[str, Any]
    input_shape: tuple[int, int, int, int]
    reference_kwargs: Mapping[str, Any] | None = None
    output_shape: Any = None
    bad_spatial: Sequence[tuple[int, int]] | None = None
    readme_config: bool = False

    @property
    def torch_kwargs(self) -> Mapping[str, Any]:
        return self.kwargs if self.reference_kwargs is None else self.reference_kwargs

    @property
    def has_dropout(self) -> bool:
        return any("dropout" in k and v for k, v in self.kwargs.items())

    def expected_output_shapes(self) -> list[tuple[int, ...]]:
        if self.output_shape is None:
            return [(self.input_shape[0], self.kwargs["num_classes"])]
        shapes = self.output_shape
        return [tuple(s) for s in shapes] if isinstance(shapes[0], (tuple, list)) else [tuple(shapes)]

    def invalid_shapes(self) -> list[tuple[int, ...]]:
        b, h, w, c = self.input_shape
        shapes = [(h, w, c), (b, h, w, c + 1)]
        if c not in (h, w):  # an NCHW batch is only distinguishable when C differs from H, W
            shapes.append((b, c, h, w))
        spatial = [(h + 1, w)] if self.bad_spatial is None else self.bad_spatial
        shapes += [(b, sh, sw, c) for sh, sw in spatial]
        return shapes


def _leaves(out) -> list[jax.Array]:
    return jax.tree_util.tree_leaves(out)


def enable_x64():
    """A context manager enabling 64-bit types: ``jax.enable_x64(True)``, or on the oldest
    JAX the packages declare (which lacks it) ``jax.experimental.enable_x64()``."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as experimental_enable_x64

    return experimental_enable_x64()


def _exact_matmuls():
    """Float32 products in float32: on GPUs and TPUs JAX's default precision rounds float32
    operands of a product (TF32, bfloat16 passes), differently in two differently fused
    programs, so "the same values" is checked at ``"highest"``."""
    return jax.default_matmul_precision("highest")


def relative_error(actual, desired) -> float:
    """``max |actual - desired| / max |desired|`` over all output leaves."""
    actual = [np.asarray(a, np.float64) for a in _leaves(actual)]
    desired = [np.asarray(d, np.float64) for d in _leaves(desired)]
    assert [a.shape for a in actual] == [d.shape for d in desired]
    diff = max(float(np.max(np.abs(a - d))) for a, d in zip(actual, desired, strict=True))
    scale = max(float(np.max(np.abs(d))) for d in desired)
    return diff / max(scale, 1e-30)


#: leaves that multiply (norm scales, running variances) are drawn around 1, others around 0.
_AROUND_ONE = ("scale", "g", "var")


def random_variables(model, images, seed: int = 0, scale: float = 0.05):
    """Variables with ``model.init``'s structure, shapes and dtypes, filled on the host.

    Norm scales and running variances are ``1 + scale * N(0, 1)``, everything else
    ``scale * N(0, 1)``, so no test rests on an initial value (zero biases, unit norms,
    zero-initialised branches). Nothing is compiled: the structure comes from
    ``jax.eval_shape``, the values from numpy.
    """
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = getattr(path[-1], "key", "")
        value = scale * rng.standard_normal(leaf.shape) + (1.0 if name in _AROUND_ONE else 0.0)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@dataclasses.dataclass
class Built:
    """A case's Flax model, its input batch, (perturbed) variables and one jitted forward.

    Calling it runs ``model.apply`` through a single ``jax.jit`` (compiled once per
    ``train`` value, shared by all tests of the case); ``traces`` records each trace.
    """

    case: ModelCase
    model: Any
    images: np.ndarray
    variables: Any
    train_kwargs: Mapping[str, Any]
    traces: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self._jitted = jax.jit(self._forward, static_argnames="train")

    def _forward(self, variables, images, rng, train=False):
        self.traces.append(train)
        kwargs = self.train_kwargs if train else {}
        result = self.model.apply(variables, images, train=train, rngs={"dropout": rng}, **kwargs)
        if kwargs.get("mutable"):
            result = result[0]  # (outputs, updated collections)
        return result

    def __call__(self, rng=None, train: bool = False, images=None):
        return self._jitted(
            self.variables,
            self.images if images is None else images,
            jax.random.key(0) if rng is None else rng,
            train=train,
        )


def assert_parity(ours, theirs, *, suite: str, case: str) -> float:
    """Assert ``relative_error(ours, theirs) <= PARITY_RTOL`` and return it; the error is
    appended to the file ``VIT_FLAX_PARITY_REPORT`` names (the nox sessions log each case)."""
    error = relative_error(ours, theirs)
    if path := os.environ.get("VIT_FLAX_PARITY_REPORT"):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"suite": suite, "case": case, "relative_error": error}) + "\n")
    assert error <= PARITY_RTOL, f"{case}: relative error {error:.3g} > {PARITY_RTOL}"
    return error


def _case_fixture(cases: Sequence[ModelCase]):
    def fixture(cls, request):
        return request.param

    # One xdist group per case: under ``pytest -n N --dist loadgroup`` a case's model is
    # built and compiled on one worker only, while different cases run in parallel.
    params = [pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(c.id)) for c in cases]
    return pytest.fixture(scope="class", params=params)(classmethod(fixture))


def _same(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(_leaves(a), _leaves(b), strict=True)
    )


_INTERFACE_TESTS = (
    "test_interface_shapes",
    "test_pooled_features_feed_the_classifier",
    "test_feature_maps_under_scan_remat_and_grad",
    "test_new_num_classes_keeps_the_backbone",
    "test_nnx_wrapper_matches_linen_and_trains",
)


def _flat_shapes(variables) -> dict[str, tuple[int, ...]]:
    return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(dict(variables)).items()}


def _nnx_optimizer(model, tx):
    """``nnx.Optimizer`` and whether ``update`` takes the model (Flax >= 0.11) or not."""
    from flax import nnx

    new_api = "model" in inspect.signature(nnx.Optimizer.update).parameters
    return nnx.Optimizer(model, tx, wrt=nnx.Param), new_api


def _skip(cls: type, name: str, reason: str) -> None:
    """Replace the inherited test ``name`` on ``cls`` by one that reports itself skipped."""
    marks = getattr(getattr(cls, name), "pytestmark", [])

    def skipped(self):
        pytest.skip(reason)

    skipped.pytestmark = list(marks)
    setattr(cls, name, skipped)


class ContractSuite:
    """Subclass with ``model_cls``, ``convert``, ``reference`` and ``cases`` set.

    ``cases`` must hold the README configuration (``readme_config=True``: parity and the
    parameter count only) and small configurations (the whole contract). Tests that do not
    apply to a model are reported as skipped, with the reason.
    """

    model_cls: ClassVar[type]
    #: ``from_vit_pytorch(state_dict, model) -> variables`` (wrap in ``staticmethod``).
    convert: ClassVar[Callable[..., Any]]
    #: the vit-pytorch module file and class name, e.g. ``("vit", "ViT")``.
    reference: ClassVar[tuple[str, str]]
    cases: ClassVar[Sequence[ModelCase]] = ()
    #: the package README. Its ```python blocks must run as written and define the names in
    #: ``readme_shapes`` with those shapes (a list of shapes for a tuple). Its ```python torch
    #: block (weight loading) defines ``logits`` and vit-pytorch's ``expected``, and may
    #: define more pairs ``<name>``/``expected_<name>``: each pair must agree within
    #: ``PARITY_RTOL``.
    readme: ClassVar[Path | None] = None
    readme_shapes: ClassVar[Mapping[str, Any]] = {}
    #: parameters (regular expressions searched in their path, as ``jax.tree_util.keystr``
    #: writes it) whose gradient is zero in exact arithmetic, such as a bias added to every
    #: logit of a softmax row; their gradient is checked to be zero up to rounding instead
    #: of non-zero (floating-point rounding leaves it either way).
    shift_invariant_params: ClassVar[Sequence[str]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.cases:
            small = [c for c in cls.cases if not c.readme_config]
            assert small, f"{cls.__name__} needs small cases besides the README configuration"
            assert any(c.readme_config for c in cls.cases), f"{cls.__name__} needs its README configuration"
            cls.case = _case_fixture(small)
            cls.eager_case = _case_fixture(small[:1])
            cls.parity_case = _case_fixture(cls.cases)
            fields = {f.name for f in dataclasses.fields(cls.model_cls)}
            if "remat" not in fields:
                _skip(
                    cls,
                    "test_remat_leaves_outputs_and_gradients_unchanged",
                    "the model has no block stack to remat",
                )
            if "scan" not in fields:
                reason = "the model has no stack of identical blocks to scan"
                _skip(cls, "test_scan_leaves_outputs_unchanged", reason)
                _skip(cls, "test_converter_builds_the_scanned_layout", reason)
            if "attention_implementation" not in fields:
                _skip(
                    cls,
                    "test_attention_implementation_reaches_dot_product_attention",
                    "the model's attention is one the fused kernel cannot express",
                )
            if not issubclass(cls.model_cls, ImageClassifier):  # a standalone layer's suite
                for name in _INTERFACE_TESTS:
                    _skip(cls, name, "a layer, not a model: no classifier, pooled features or maps")
            if cls.readme is None:
                reason = "this suite has no README (a second suite in one file, for a standalone layer)"
                _skip(cls, "test_readme_usage_runs_as_written", reason)
                _skip(cls, "test_readme_weight_loading_runs_as_written", reason)

    @classmethod
    def build(cls, case: ModelCase, **overrides):
        """The Flax model of ``case`` (``overrides`` such as ``dtype`` added)."""
        return cls.model_cls(**{**case.kwargs, **overrides})

    @classmethod
    def train_apply_kwargs(cls) -> dict:
        """Extra ``apply`` keywords for train mode (BatchNorm models add ``mutable``)."""
        return {}

    # fixtures ----------------------------------------------------------------------

    @classmethod
    def make_built(cls, case: ModelCase) -> Built:
        model = cls.build(case)
        images = np.asarray(jax.random.normal(jax.random.key(42), case.input_shape, jnp.float32))
        return Built(case, model, images, random_variables(model, images), cls.train_apply_kwargs())

    @pytest.fixture(scope="class")
    @classmethod
    def built(cls, case) -> Built:
        return cls.make_built(case)

    @pytest.fixture(scope="class")
    @classmethod
    def reference_model(cls, parity_case):
        module, name = cls.reference
        return build_reference(module, name, parity_case.torch_kwargs)

    # the contract -------------------------------------------------------------------

    def test_output_shape_and_finite(self, built):
        out = built()
        assert [o.shape for o in _leaves(out)] == built.case.expected_output_shapes()
        assert all(bool(jnp.isfinite(o).all()) for o in _leaves(out))

    def test_jit_matches_eager(self, eager_case):
        """Eager (op-by-op) execution is slow to start, so it runs on the first small case."""
        built = self.make_built(eager_case)
        with _exact_matmuls():
            with jax.disable_jit():
                eager = built.model.apply(built.variables, built.images)
            error = relative_error(built(), eager)
        assert error < 1e-5, f"relative error {error:.2e}"

    def test_traces_once_per_shape(self, built):
        built(), built(images=built.images + 1.0), built(rng=jax.random.key(5))
        assert built.traces.count(False) == 1

    def test_every_parameter_gets_a_gradient(self, built):
        def loss(params):
            out = built.model.apply({**built.variables, "params": params}, built.images)
            return sum(jnp.sum(jnp.sin(o.astype(jnp.float32))) for o in _leaves(out))

        grads = jax.jit(jax.grad(loss))(built.variables["params"])
        flat = [(jax.tree_util.keystr(p), g) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]]
        assert all(bool(jnp.isfinite(g).all()) for _, g in flat)
        invariant = {k for k, _ in flat if any(re.search(p, k) for p in self.shift_invariant_params)}
        dead = [k for k, g in flat if k not in invariant and g.size and not bool(jnp.any(g != 0))]
        assert not dead, f"parameters with an all-zero gradient: {dead}"
        # the shift-invariant ones: zero up to the rounding of the largest gradient
        largest = max(float(jnp.max(jnp.abs(g))) for _, g in flat if g.size)
        rounding = {k: float(jnp.max(jnp.abs(g))) / largest for k, g in flat if k in invariant}
        assert all(r < 1e-5 for r in rounding.values()), (
            f"gradients of shift-invariant parameters: {rounding}"
        )

    def test_eval_is_deterministic(self, built):
        assert _same(built(rng=jax.random.key(1)), built(rng=jax.random.key(2)))

    def test_train_mode_dropout(self, built):
        """With dropout, train mode depends on (only) the 'dropout' rng; without, it is eval."""
        a1 = built(rng=jax.random.key(1), train=True)
        a2 = built(rng=jax.random.key(1), train=True)
        b = built(rng=jax.random.key(2), train=True)
        assert _same(a1, a2), "train mode is not a function of the 'dropout' rng"
        if built.case.has_dropout:
            assert not _same(a1, b), "train-mode dropout ignores the 'dropout' rng"
        else:
            assert _same(a1, b), "train mode is random although the configuration has no dropout"

    def test_bfloat16_compute(self, built):
        model = self.build(built.case, dtype=jnp.bfloat16)
        out = jax.jit(model.apply)(built.variables, built.images)
        for o in _leaves(out):
            assert o.dtype == jnp.bfloat16, f"output dtype {o.dtype} with dtype=bfloat16"
            assert bool(jnp.isfinite(o.astype(jnp.float32)).all())
        assert relative_error(out, built()) < BF16_RTOL

    def test_param_dtype(self, built):
        model = self.build(built.case, param_dtype=jnp.bfloat16)
        shapes = jax.eval_shape(model.init, jax.random.key(0), built.images)
        dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes["params"])}
        assert dtypes == {jnp.dtype(jnp.bfloat16)}

    def test_malformed_input_raises_at_trace_time(self, built):
        for shape in built.case.invalid_shapes():
            bad = jax.ShapeDtypeStruct(shape, jnp.float32)
            with pytest.raises(ValueError) as info:
                jax.eval_shape(built.model.apply, built.variables, bad)
            message = str(info.value)
            assert str(tuple(shape)) in message and "expected" in message, message

    def test_remat_leaves_outputs_and_gradients_unchanged(self, eager_case):
        """``remat=True`` rematerialises blocks in the backward pass; nothing else changes."""
        built = self.make_built(eager_case)
        remat = self.build(eager_case, remat=True)

        def loss(model, params):
            out = model.apply({**built.variables, "params": params}, built.images)
            return sum(jnp.sum(jnp.sin(o)) for o in _leaves(out))

        params = built.variables["params"]
        with _exact_matmuls():
            plain = jax.jit(jax.value_and_grad(lambda p: loss(built.model, p)))(params)
            rematted = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(params)
        errors = relative_error(rematted[0], plain[0]), relative_error(rematted[1], plain[1])
        assert errors[0] < 1e-6 and errors[1] < 1e-5, f"relative errors {errors[0]:.2e}, {errors[1]:.2e}"

    def test_scan_leaves_outputs_unchanged(self, eager_case):
        """``scan=True`` runs each homogeneous block stack as one ``nn.scan``: the same
        variables, stacked (:func:`~vit_layers_flax.stack_layers`), give the same outputs,
        and a stack's parameters live in one subtree named ``layers`` with a leading axis."""
        built = self.make_built(eager_case)
        scanned = self.build(eager_case, scan=True)
        like = jax.eval_shape(scanned.init, jax.random.key(0), built.images)
        variables = stack_layers(built.variables, like)
        assert jax.tree.structure(variables) == jax.tree.structure(like)
        assert [v.shape for v in jax.tree.leaves(variables)] == [v.shape for v in jax.tree.leaves(like)]
        paths = [
            tuple(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(like["params"])[0]
        ]
        assert any("layers" in path for path in paths), "scan=True built no scanned stack named 'layers'"
        with _exact_matmuls():
            error = relative_error(jax.jit(scanned.apply)(variables, built.images), built())
        assert error < 1e-6, f"relative error {error:.2e}"

    def test_attention_implementation_reaches_dot_product_attention(self, eager_case):
        """``attention_implementation`` is :func:`jax.nn.dot_product_attention`'s
        ``implementation``: ``'xla'`` lowers to exactly the default program; ``'cudnn'``
        runs on a GPU (close to XLA in bfloat16, cuDNN's dtype) and is refused by JAX
        elsewhere, which shows the option reaches it."""
        built = self.make_built(eager_case)

        def lowered(model):
            return jax.jit(model.apply).lower(built.variables, built.images).as_text()

        assert lowered(self.build(eager_case, attention_implementation="xla")) == lowered(built.model)
        cudnn = self.build(eager_case, attention_implementation="cudnn", dtype=jnp.bfloat16)
        if jax.default_backend() == "gpu":
            xla16 = self.build(eager_case, attention_implementation="xla", dtype=jnp.bfloat16)
            expected = jax.jit(xla16.apply)(built.variables, built.images)
            assert relative_error(jax.jit(cudnn.apply)(built.variables, built.images), expected) < BF16_RTOL
        else:
            with pytest.raises(RuntimeError, match="cuDNN"):
                jax.jit(cudnn.apply).lower(built.variables, built.images)

    # the interface every model has ------------------------------------------------------

    def test_interface_shapes(self, parity_case):
        """Logits, pooled features (``num_features``), feature maps (``feature_info``) and
        the headless model, on every case (abstract evaluation: nothing is computed)."""
        model = self.build(parity_case)
        images = jax.ShapeDtypeStruct(parity_case.input_shape, jnp.float32)
        b, h, w, _ = parity_case.input_shape
        variables = jax.eval_shape(model.init, jax.random.key(0), images)
        pooled = jax.eval_shape(functools.partial(model.apply, pre_logits=True), variables, images)
        assert pooled.shape == (b, model.num_features), f"pre_logits shape {pooled.shape}"
        maps = jax.eval_shape(functools.partial(model.apply, return_features=True), variables, images)
        info = model.feature_info
        assert isinstance(maps, tuple) and len(maps) == len(info) > 0, f"{len(maps)} maps, {info}"
        for m, i in zip(maps, info, strict=True):
            rh, rw = i.reduction
            expected = (b, -(-h // rh), -(-w // rw), i.channels)
            assert m.shape[0] == b and m.shape[3] == i.channels, f"map {m.shape}, {i}"
            # the map is ceil(input / reduction), 1 more or less where padding or an odd
            # kernel makes it so, or the reduction is the input over the map rounded up
            # (unpadded overlapping patches)
            sizes_fit = all(
                m.shape[k] - expected[k] in (-1, 0, 1) or -(-side // m.shape[k]) == r
                for k, side, r in ((1, h, rh), (2, w, rw))
            )
            assert sizes_fit, f"map {m.shape}, expected {expected} (+-1) from {i}"
        if len(info) > 1:  # out_indices selects maps, negative indices from the end
            chosen = self.build(parity_case, out_indices=(-1, 0))
            some = jax.eval_shape(functools.partial(chosen.apply, return_features=True), variables, images)
            assert chosen.feature_info == (info[-1], info[0])
            assert [m.shape for m in some] == [maps[-1].shape, maps[0].shape]
        headless = self.build(parity_case, num_classes=0)
        bare = jax.eval_shape(headless.init, jax.random.key(0), images)
        assert jax.eval_shape(headless.apply, bare, images).shape == (b, headless.num_features)
        full, bare = _flat_shapes(variables), _flat_shapes(bare)
        assert set(bare) <= set(full) and all(full[k] == v for k, v in bare.items()), (
            "num_classes=0 must drop the classifier and nothing else"
        )
        if model.num_classes:
            assert set(full) - set(bare) == classifier_paths(model)

    def test_pooled_features_feed_the_classifier(self, eager_case):
        """``pre_logits=True`` is what the classifier reads: its layers, applied to
        consecutive slices of the pooled features and summed, give the logits; a
        ``num_classes=0`` model on the same parameters returns the pooled features."""
        built = self.make_built(eager_case)
        head = classifier_paths(built.model)
        flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(built.variables).items()}
        bare = traverse_util.unflatten_dict(
            {tuple(k.split("/")): v for k, v in flat.items() if k not in head}
        )
        headless = self.build(eager_case, num_classes=0)

        def run(variables, bare, images):
            logits = built.model.apply(variables, images)
            pooled = built.model.apply(variables, images, pre_logits=True)
            return logits, pooled, headless.apply(bare, images)

        with _exact_matmuls():
            logits, pooled, features = jax.jit(run)(built.variables, bare, built.images)
        assert _same(features, pooled), "num_classes=0 differs from pre_logits=True"
        if len(_leaves(logits)) > 1:
            return  # several heads on the same features (distillation): checked by the package
        layers = sorted({k.rsplit("/", 1)[0] for k in head}, key=lambda m: list(flat).index(f"{m}/kernel"))
        widths = [flat[f"{m}/kernel"].shape[0] for m in layers]
        assert sum(widths) == built.model.num_features, f"classifier inputs {widths}"
        offsets = np.cumsum([0, *widths])
        expected = sum(
            np.asarray(pooled[:, o : o + n], np.float64) @ np.asarray(flat[f"{m}/kernel"], np.float64)
            + np.asarray(flat[f"{m}/bias"], np.float64)
            for m, o, n in zip(layers, offsets, widths, strict=False)
        )
        error = relative_error(logits, expected)
        assert error < 1e-5, f"classifier on the pooled features: relative error {error:.2e}"

    def test_feature_maps_under_scan_remat_and_grad(self, eager_case):
        """The maps are the same with ``scan``/``remat`` (where the model has them), and in
        train mode every map's gradient reaches the images."""
        built = self.make_built(eager_case)
        fields = {f.name for f in dataclasses.fields(self.model_cls)}
        options = {k: True for k in ("scan", "remat") if k in fields}
        other = self.build(eager_case, **options)
        variables = built.variables
        if options.get("scan"):
            variables = stack_layers(variables, jax.eval_shape(other.init, jax.random.key(0), built.images))
        features = lambda model, v, x: model.apply(v, x, return_features=True)  # noqa: E731
        with _exact_matmuls():
            plain = jax.jit(functools.partial(features, built.model))(built.variables, built.images)
            again = jax.jit(functools.partial(features, other))(variables, built.images)
        error = relative_error(again, plain)
        assert error < 1e-6, f"feature maps with {options}: relative error {error:.2e}"

        def map_grads(v, x):
            def one(i, x):
                out = other.apply(
                    v,
                    x,
                    train=True,
                    return_features=True,
                    rngs={"dropout": jax.random.key(1)},
                    **self.train_apply_kwargs(),
                )
                maps = out[0] if self.train_apply_kwargs().get("mutable") else out
                return jnp.sum(jnp.sin(maps[i]))

            return [jax.grad(functools.partial(one, i))(x) for i in range(len(plain))]

        for i, g in enumerate(jax.jit(map_grads)(variables, built.images)):
            assert bool(jnp.isfinite(g).all()) and bool(jnp.any(g != 0)), f"map {i} passes no gradient"

    def test_new_num_classes_keeps_the_backbone(self, eager_case):
        """:func:`adapt_variables` keeps every variable but the classifier, which is
        initialised afresh in the new shape, and rejects any other mismatch."""
        built = self.make_built(eager_case)
        source = {"/".join(k): v for k, v in traverse_util.flatten_dict(built.variables).items()}
        target = self.build(eager_case, num_classes=built.model.num_classes + 3)
        adapted = adapt_variables(built.variables, target, rng=jax.random.key(3))
        flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(adapted).items()}
        head = classifier_paths(target)
        assert set(flat) == set(_flat_shapes(jax.eval_shape(target.init, jax.random.key(0), built.images)))
        for name, value in flat.items():
            if name in head:
                assert value.shape[-1] == target.num_classes, f"{name}: {value.shape}"
            else:
                assert _same(value, source[name]), f"{name} changed"
        headless = adapt_variables(built.variables, self.build(eager_case, num_classes=0))
        assert not set(traverse_util.flatten_dict(headless)) & {tuple(k.split("/")) for k in head}
        first = next(k for k in source if k not in head)
        missing = traverse_util.unflatten_dict(
            {tuple(k.split("/")): v for k, v in source.items() if k != first}
        )
        with pytest.raises(ConversionError, match=re.escape(first)):
            adapt_variables(missing, target)

    def test_nnx_wrapper_matches_linen_and_trains(self, eager_case):
        """:func:`to_nnx` with given variables equals ``apply`` in eval, three
        ``nnx.Optimizer`` steps lower the training loss on a fixed batch, and BatchNorm
        statistics change in train mode only. Dropout off, so the loss is deterministic."""
        import optax
        from flax import nnx

        built = self.make_built(eager_case)
        no_dropout = {f.name: 0.0 for f in dataclasses.fields(self.model_cls) if "dropout" in f.name}
        model = self.build(eager_case, **no_dropout)
        wrapped = to_nnx(model, built.images, rngs=nnx.Rngs(params=0, dropout=1), variables=built.variables)

        evaluate = nnx.jit(lambda m, x: m(x))

        stats = lambda: [np.asarray(a) for a in jax.tree_util.tree_leaves(nnx.state(wrapped, nnx.BatchStat))]  # noqa: E731
        before = stats()
        with _exact_matmuls():
            error = relative_error(evaluate(wrapped, built.images), built())
        assert error < 1e-6, f"NNX eval vs Linen apply: relative error {error:.2e}"
        assert all(np.array_equal(a, b) for a, b in zip(before, stats(), strict=True)), (
            "eval changed batch_stats"
        )

        labels = jnp.arange(built.images.shape[0]) % max(model.num_classes, 1)
        optimizer, new_api = _nnx_optimizer(wrapped, optax.adam(1e-3))

        @nnx.jit
        def step(m, optimizer, x, y):
            def loss(m):
                out = _leaves(m(x, train=True))
                return sum(optax.softmax_cross_entropy_with_integer_labels(o, y).mean() for o in out)

            value, grads = nnx.value_and_grad(loss)(m)
            optimizer.update(m, grads) if new_api else optimizer.update(grads)
            return value

        losses = [float(step(wrapped, optimizer, built.images, labels)) for _ in range(4)]
        assert losses[3] < losses[0], f"training losses {losses}"
        if before:
            assert not any(np.array_equal(a, b) for a, b in zip(before, stats(), strict=True)), (
                "train mode left batch_stats unchanged"
            )

    def test_readme_usage_runs_as_written(self):
        namespaces = run_readme_usage(self.readme)
        defined = {k: v for ns in namespaces for k, v in ns.items()}
        for name, shape in self.readme_shapes.items():
            assert name in defined, f"the README usage does not define {name!r}"
            shapes = [tuple(x.shape) for x in _leaves(defined[name])]
            assert shapes == [tuple(s) for s in (shape if isinstance(shape, list) else [shape])]

    # parity with vit-pytorch -----------------------------------------------------------

    @pytest.mark.parity
    def test_converter_rejects_mismatched_state_dict(self, built):
        good = self._zeros_state_dict(built.case)
        first = next(iter(good))
        missing = {k: v for k, v in good.items() if k != first}
        extra = {**good, "unexpected.weight": np.zeros(3, np.float32)}
        reshaped = {**good, first: np.zeros((*good[first].shape, 2), np.float32)}
        self.convert(good, built.model)  # the well-formed one converts
        for bad, needle in ((missing, re.escape(first)), (extra, r"unexpected\.weight"), (reshaped, "shape")):
            with pytest.raises(ConversionError, match=needle):
                self.convert(bad, built.model)

    def _zeros_state_dict(self, case: ModelCase) -> dict[str, np.ndarray]:
        """A state_dict with the reference's keys and shapes (built on torch's meta device)."""
        import torch

        module, cls = self.reference
        with torch.device("meta"):
            model = getattr(load_reference(module), cls)(**case.torch_kwargs)
        return {k: np.zeros(tuple(v.shape), np.float32) for k, v in model.state_dict().items()}

    @pytest.mark.parity
    def test_readme_weight_loading_runs_as_written(self):
        load_reference(self.reference[0])  # vit_pytorch's __init__ needs torchvision: import the file alone
        namespace = {k: v for ns in run_readme_usage(self.readme, tag="torch") for k, v in ns.items()}
        pairs = {"logits": "expected"} | {
            name.removeprefix("expected_"): name for name in namespace if name.startswith("expected_")
        }
        for ours, theirs in pairs.items():
            expected = [np.asarray(e.detach().numpy()) for e in _leaves(namespace[theirs])]
            error = relative_error(namespace[ours], expected)
            assert error <= PARITY_RTOL, f"README {ours} vs {theirs}: relative error {error:.3g}"

    @pytest.mark.parity
    def test_parameter_count_matches_reference(self, parity_case, reference_model):
        model = self.build(parity_case)
        images = jax.ShapeDtypeStruct(parity_case.input_shape, jnp.float32)
        shapes = jax.eval_shape(model.init, jax.random.key(0), images)
        ours = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes["params"]))
        assert ours == parameter_count(reference_model)

    @pytest.mark.parity
    def test_logits_match_reference(self, parity_case, reference_model):
        model = self.build(parity_case)
        variables = self.convert(reference_model.state_dict(), model)
        images = np.asarray(jax.random.normal(jax.random.key(7), parity_case.input_shape, jnp.float32))
        ours = jax.jit(model.apply)(variables, images)
        theirs = reference_outputs(reference_model, images)
        assert_parity(ours, theirs, suite=type(self).__name__, case=parity_case.id)

    @pytest.mark.parity
    def test_converter_builds_the_scanned_layout(self, eager_case):
        """``from_vit_pytorch`` fills a ``scan=True`` model too (its stacked layout), and
        that model matches vit-pytorch like the default one (first small case)."""
        module, name = self.reference
        reference_model = build_reference(module, name, eager_case.torch_kwargs)
        model = self.build(eager_case, scan=True)
        variables = self.convert(reference_model.state_dict(), model)
        images = np.asarray(jax.random.normal(jax.random.key(7), eager_case.input_shape, jnp.float32))
        ours = jax.jit(model.apply)(variables, images)
        theirs = reference_outputs(reference_model, images)
        assert_parity(ours, theirs, suite=type(self).__name__, case=eager_case.id + "/scan")


class BatchNormContractSuite(ContractSuite):
    """:class:`ContractSuite` for models with BatchNorm (a ``batch_stats`` collection).

    Train mode runs with ``mutable=['batch_stats']``, and parity also covers train mode on
    every case: with dropout switched off on both sides, the outputs computed with batch
    statistics and the running statistics they update (torch momentum 0.1 is Flax
    momentum 0.9) must match vit-pytorch's in ``model.train()``.
    """

    @classmethod
    def train_apply_kwargs(cls) -> dict:
        return {"mutable": ["batch_stats"]}

    def test_eval_needs_no_mutable_collection(self, built):
        """``train=False`` reads the running averages and leaves ``batch_stats`` alone."""
        out = jax.jit(built.model.apply)(built.variables, built.images)
        assert _same(out, built())

    def test_train_mode_updates_batch_stats(self, built):
        def train(variables, images):
            rngs = {"dropout": jax.random.key(0)}
            return built.model.apply(variables, images, train=True, rngs=rngs, **self.train_apply_kwargs())

        _, updates = jax.jit(train)(built.variables, built.images)
        old = jax.tree_util.tree_leaves(built.variables["batch_stats"])
        new = jax.tree_util.tree_leaves(updates["batch_stats"])
        assert len(old) == len(new) and all(not _same(a, b) for a, b in zip(old, new, strict=True))

    @pytest.mark.parity
    def test_train_mode_matches_reference(self, parity_case, reference_model):
        """Batch-statistics outputs and updated running statistics equal torch's ``train()`` ones."""
        import copy

        import torch

        # dropout off on both sides, so that train mode differs from eval only by BatchNorm
        no_dropout = {f.name: 0.0 for f in dataclasses.fields(self.model_cls) if "dropout" in f.name}
        model = self.build(parity_case, **no_dropout)
        variables = self.convert(reference_model.state_dict(), model)
        images = np.asarray(jax.random.normal(jax.random.key(7), parity_case.input_shape, jnp.float32))
        ours, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
            variables, images
        )
        torch_model = copy.deepcopy(reference_model).train()
        for module in torch_model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        with torch.no_grad():
            theirs = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        theirs_stats = self.convert(torch_model.state_dict(), model)["batch_stats"]
        theirs = [t.numpy() for t in jax.tree_util.tree_leaves(theirs)]
        assert_parity(ours, theirs, suite=type(self).__name__, case=parity_case.id + "/train")
        flat_ours = jax.tree_util.tree_flatten_with_path(updates["batch_stats"])[0]
        flat_theirs = dict(jax.tree_util.tree_flatten_with_path(theirs_stats)[0])
        for path, value in flat_ours:
            stat_error = relative_error(value, flat_theirs[path])
            assert stat_error <= PARITY_RTOL, f"{jax.tree_util.keystr(path)}: relative error {stat_error:.3g}"
