"""Load and prepare vit-pytorch reference models for parity tests."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Mapping
from typing import Any

import numpy as np


def load_reference(module: str) -> types.ModuleType:
    """Import ``vit_pytorch.<module>`` without running ``vit_pytorch/__init__.py``.

    The package ``__init__`` imports modules that need torchvision; the model files need
    only torch and einops. A stub parent package pointing at the installed directory lets
    one file be imported on its own.
    """
    name = f"vit_pytorch.{module}"
    if name in sys.modules:
        return sys.modules[name]
    if "vit_pytorch" not in sys.modules:
        spec = importlib.util.find_spec("vit_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                "parity tests need the reference: pip install torch einops && "
                "pip install --no-deps vit-pytorch"
            )
        stub = types.ModuleType("vit_pytorch")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["vit_pytorch"] = stub
    return importlib.import_module(name)


def build_reference(module: str, cls: str, kwargs: Mapping[str, Any], *, seed: int = 0, scale: float = 0.05):
    """Instantiate ``vit_pytorch.<module>.<cls>(**kwargs)`` in eval mode with perturbed weights.

    Every parameter gets Gaussian noise of std ``scale`` added, so that parity does not
    rest on initial values (zero biases, unit norms, zero-initialised branches).
    BatchNorm running means are shifted and running variances rescaled the same way.
    """
    import torch

    torch.manual_seed(seed)
    return perturb(getattr(load_reference(module), cls)(**kwargs), seed=seed + 1, scale=scale)


def build_timm_reference(name: str, *, seed: int = 0, scale: float = 0.05, **kwargs: Any):
    """timm's model ``name`` (``timm.create_model(name, pretrained=False, **kwargs)``: nothing
    is downloaded) in eval mode with weights perturbed as :func:`build_reference`'s."""
    import timm
    import torch

    torch.manual_seed(seed)
    return perturb(timm.create_model(name, pretrained=False, **kwargs), seed=seed + 1, scale=scale)


def perturb(model, *, seed: int = 1, scale: float = 0.05):
    """``model`` in eval mode, every parameter moved by Gaussian noise of std ``scale`` (so that
    parity does not rest on initial values: zero biases, unit norms, zero-initialised
    branches), BatchNorm running means shifted and running variances rescaled the same way."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(scale * torch.randn(buf.shape, generator=generator))
            elif name.endswith("running_var"):
                buf.mul_(1 + scale * torch.rand(buf.shape, generator=generator))
    return model.eval()


def reference_outputs(model, images_nhwc: np.ndarray, **kwargs) -> list[np.ndarray]:
    """Run a torch model on NHWC numpy images (given to it as NCHW); outputs as numpy leaves."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy()), **kwargs)
    leaves = out if isinstance(out, (tuple, list)) else (out,)
    return [leaf.detach().cpu().numpy() for leaf in leaves]


def parameter_count(model) -> int:
    """Number of trainable parameters of a torch module (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
