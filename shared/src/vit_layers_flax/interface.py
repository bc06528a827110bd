"""The interface every vit-flax model has: logits, pooled features, feature maps, a new head."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import traverse_util

from vit_layers_flax.dense import Dense
from vit_layers_flax.module import Model
from vit_layers_flax.typing import Array


class FeatureInfo(NamedTuple):
    """One feature map of ``return_features=True``: its ``channels``, its ``reduction`` (the
    input's ``(height, width)`` over the map's, rounded up) and the ``module`` that makes it."""

    channels: int
    reduction: tuple[int, int]
    module: str


class ImageClassifier(Model, kw_only=True):
    """The base of the 17 models: images in, logits, pooled features or feature maps out.

    ``model.apply(variables, images)`` gives logits, ``pre_logits=True`` what the classifier
    reads (``(batch, model.num_features)``), ``return_features=True`` a tuple of NHWC maps
    described by ``model.feature_info``. ``num_classes=0`` builds no classifier: the model
    then returns its pooled features. ``out_indices`` selects maps (negative indices count
    from the end; ``None``: all). A subclass defines ``num_features``, ``feature_maps()``
    (every map it can return) and calls :meth:`select_features` and :meth:`classify`.
    """

    out_indices: Sequence[int] | None = None

    @property
    def num_features(self) -> int:
        raise NotImplementedError

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Every map the model can return, in order (``out_indices`` selects among them)."""
        raise NotImplementedError

    @property
    def feature_info(self) -> tuple[FeatureInfo, ...]:
        return self.select_features(self.feature_maps())

    def select_features(self, maps: Sequence[Any]) -> tuple[Any, ...]:
        """The entries of ``maps`` that ``out_indices`` names."""
        if self.out_indices is None:
            return tuple(maps)
        bad = [i for i in self.out_indices if not -len(maps) <= i < len(maps)]
        if bad:
            raise ValueError(
                f"{type(self).__name__}: out_indices {tuple(self.out_indices)} expected in "
                f"[-{len(maps)}, {len(maps)}) for its {len(maps)} feature maps, received {bad}"
            )
        return tuple(maps[i] for i in self.out_indices)

    def classify(self, x: Array, *, pre_logits: bool, name: str = "mlp_head") -> Array:
        """``Dense(num_classes)`` named ``name`` on the pooled features ``x``, unless
        ``pre_logits`` or ``num_classes == 0`` (then ``x``). Call from the compact method."""
        if pre_logits or not self.num_classes:
            return x
        return Dense(self.num_classes, name=name, dtype=self.dtype, param_dtype=self.param_dtype)(x)

    def sample_input(self, batch: int = 1) -> jax.ShapeDtypeStruct:
        """A float32 batch of the smallest images the model takes (for ``eval_shape``/``init``)."""
        shape = (batch, *self.input_sizes().smallest_shape, getattr(self, "channels", 3))
        return jax.ShapeDtypeStruct(shape, jnp.float32)


def block_features(
    channels: int, reduction: int | tuple[int, int], depth: int, stack: str = "transformer"
) -> tuple[FeatureInfo, ...]:
    """One :class:`FeatureInfo` per block ``stack/layers_{i}`` of a flat-token model."""
    r = (reduction, reduction) if isinstance(reduction, int) else tuple(reduction)
    return tuple(FeatureInfo(channels, r, f"{stack}/layers_{i}") for i in range(depth))


def token_map(x: Array, grid: tuple[int, int], prefix: int = 0) -> Array:
    """``(batch, prefix + h * w, dim) -> (batch, h, w, dim)``: patch tokens back on their
    grid, the ``prefix`` (class, distillation) tokens dropped."""
    h, w = grid
    if x.ndim != 3 or x.shape[1] != prefix + h * w:
        raise ValueError(
            f"token_map: expected (batch, {prefix} + {h} * {w}, dim) tokens, received shape {x.shape}"
        )
    return rearrange(x[:, prefix:], "b (h w) d -> b h w d", h=h, w=w)


def grid_reduction(image_size: int | tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The ``(height, width)`` reduction of a ``grid`` made from ``image_size`` images."""
    ih, iw = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (math.ceil(ih / grid[0]), math.ceil(iw / grid[1]))


def _flat(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def classifier_paths(model: ImageClassifier) -> set[str]:
    """The variables (``collection/module/.../name``) of ``model``'s classifier: those a
    ``num_classes=1`` model has and a ``num_classes=0`` one does not."""
    sample, key = model.sample_input(), jax.random.key(0)
    with_head = jax.eval_shape(model.clone(num_classes=1).init, key, sample)
    without = jax.eval_shape(model.clone(num_classes=0).init, key, sample)
    return set(_flat(with_head)) - set(_flat(without))


def adapt_variables(
    variables: Mapping[str, Any], model: ImageClassifier, *, rng: jax.Array | None = None
) -> dict[str, Any]:
    """``variables`` of the same architecture with another ``num_classes``, fitted to ``model``.

    Every variable with ``model``'s path and shape is kept; the classifier's (see
    :func:`classifier_paths`) are initialised afresh from ``rng`` where ``model`` needs
    another shape or has none (a head dropped when ``num_classes=0``). Any other difference
    raises :class:`~vit_layers_flax.ConversionError` naming the variable, the expected and
    the received shape. The fine-tuning call: ``adapt_variables(variables, model)``.
    """
    from vit_layers_flax.conversion import ConversionError

    sample = model.sample_input()
    want = _flat(jax.eval_shape(model.init, jax.random.key(0), sample))
    got = _flat(variables)
    head = classifier_paths(model)
    problems, fresh = [], []
    for name in sorted(set(want) | set(got)):
        if name in want and name in got and tuple(want[name].shape) == tuple(got[name].shape):
            continue
        if name not in head:
            expected = tuple(want[name].shape) if name in want else "nothing"
            received = tuple(got[name].shape) if name in got else "nothing"
            problems.append(f"{name}: expected {expected}, received {received}")
        elif name in want:
            fresh.append(name)
    if problems:
        raise ConversionError(
            f"variables do not fit {type(model).__name__} (only the classifier may differ): "
            + "; ".join(problems)
        )
    if fresh:
        zeros = jnp.zeros(sample.shape, sample.dtype)
        init = jax.jit(lambda key: {k: v for k, v in _flat(model.init(key, zeros)).items() if k in fresh})
        new = init(jax.random.key(0) if rng is None else rng)
    else:
        new = {}
    out = {k: new[k] if k in new else jnp.asarray(got[k], want[k].dtype) for k in want}
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})
