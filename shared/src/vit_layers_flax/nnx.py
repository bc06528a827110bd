"""Any vit-flax model as a Flax NNX module, through ``flax.nnx.bridge``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx, traverse_util

from vit_layers_flax.conversion import ConversionError

#: the NNX variable type of each Linen collection the models have
_COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


class LinenModel(nnx.bridge.ToNNX):
    """A Linen model as an NNX module (see :func:`to_nnx`).

    ``model(images)`` is eval; ``model(images, train=True)`` draws dropout from the rngs
    given to :func:`to_nnx` (their ``dropout`` stream, else ``default``) and updates
    BatchNorm statistics in place. Other keywords (``pre_logits``, ``return_features``)
    reach the Linen model.
    """

    def __init__(self, module, *, rngs: nnx.Rngs):
        super().__init__(module, rngs=rngs)
        self.to_nnx__dropout_rngs = rngs

    def __call__(self, *args: Any, train: bool = False, **kwargs: Any) -> Any:
        if not train:
            return super().__call__(*args, **kwargs)
        rngs = nnx.Rngs(dropout=self.to_nnx__dropout_rngs.dropout())
        return super().__call__(*args, train=True, rngs=rngs, mutable=["batch_stats"], **kwargs)


def to_nnx(
    model,
    sample_input: jax.ShapeDtypeStruct | jax.Array | None = None,
    *,
    rngs: nnx.Rngs,
    variables: Mapping[str, Any] | None = None,
) -> LinenModel:
    """``model`` (a Linen module) as an ``nnx.Module``, initialised with ``rngs`` on
    ``sample_input`` (default ``model.sample_input()``), or holding ``variables`` (converted
    or pretrained Linen variables, checked against the model's paths and shapes)."""
    if sample_input is None:
        sample_input = model.sample_input()
    shape, dtype = sample_input.shape, sample_input.dtype

    @nnx.jit  # initialised in one compiled program, not op by op
    def build(rngs: nnx.Rngs) -> LinenModel:
        wrapped = LinenModel(model, rngs=rngs)
        nnx.bridge.lazy_init(wrapped, jax.numpy.zeros(shape, dtype))
        return wrapped

    wrapped = build(rngs)
    if variables is not None:
        _load(wrapped, variables, type(model).__name__)
    return wrapped


def _names(path) -> tuple[str, ...]:
    return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def _load(wrapped: LinenModel, variables: Mapping[str, Any], name: str) -> None:
    """Replace the wrapper's Linen variables by ``variables`` (same paths and shapes)."""
    given = {
        (collection, *path): value
        for collection, tree in variables.items()
        for path, value in traverse_util.flatten_dict(dict(tree)).items()
    }
    problems, seen = [], set()
    for collection, kind in _COLLECTIONS.items():
        state = nnx.state(wrapped, kind)

        def take(path, leaf, collection=collection):
            key = (collection, *_names(path))
            seen.add(key)
            if key not in given:
                problems.append(f"missing {'/'.join(key)} {tuple(leaf.shape)}")
                return leaf
            value = given[key]
            if tuple(value.shape) != tuple(leaf.shape):
                problems.append(
                    f"{'/'.join(key)}: expected {tuple(leaf.shape)}, received {tuple(value.shape)}"
                )
                return leaf
            return jax.numpy.asarray(value, leaf.dtype)

        new = jax.tree_util.tree_map_with_path(take, state)
        if not problems:
            nnx.update(wrapped, new)
    if extra := sorted("/".join(k) for k in set(given) - seen):
        problems.append(f"variables the model does not have: {extra}")
    if problems:
        raise ConversionError(f"variables do not match {name}: " + "; ".join(problems))
