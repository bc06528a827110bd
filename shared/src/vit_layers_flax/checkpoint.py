"""Read a vit-pytorch checkpoint file without unpickling arbitrary objects."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_layers_flax.conversion import to_numpy


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a ``state_dict`` from ``path`` as numpy arrays.

    ``.safetensors`` files are read with ``safetensors`` (``pip install safetensors``);
    anything else with ``torch.load(..., weights_only=True)``, which refuses pickled
    code. A checkpoint that wraps the weights (``{'state_dict': ...}`` or
    ``{'model': ...}``) is unwrapped.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("reading .safetensors needs `pip install safetensors`") from err
        return dict(load_file(path))
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading a torch checkpoint needs torch; or save it as .safetensors") from err
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict mapping")
    return {k: to_numpy(v) for k, v in obj.items()}
