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


def timm_features(model, images_nhwc: np.ndarray, *, pre_logits: bool = False) -> np.ndarray:
    """A timm model's logits (or, with ``pre_logits``, its pooled features) of NHWC images."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.array(images_nhwc).transpose(0, 3, 1, 2)))
        return model.forward_head(model.forward_features(x), pre_logits=pre_logits).numpy()


def numpy_state_dict(model) -> dict[str, np.ndarray]:
    """A torch model's ``state_dict`` as numpy arrays (what a converter takes)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def sample_images(model, batch: int = 2, seed: int = 7) -> np.ndarray:
    """Standard-normal float32 images of ``model.sample_input(batch)``'s shape."""
    import jax
    import jax.numpy as jnp

    shape = model.sample_input(batch).shape
    return np.asarray(jax.random.normal(jax.random.key(seed), shape, jnp.float32))


def check_timm_pretrained_configs(presets, pattern: str | None) -> None:
    """Assert that ``presets`` (name -> ``Preset``) are the names timm lists with weights for
    ``pattern`` (``None``: a selection, not checked), each with every tag timm lists (its
    default first) and timm's pretrained configuration (hub id, classes, input size,
    mean/std, crop, interpolation, licence, classifier keys). The architecture check stays
    with each package."""
    import timm
    from timm.models import get_pretrained_cfg

    if pattern is not None:
        assert sorted(presets) == sorted({n.split(".")[0] for n in timm.list_pretrained(pattern)})
    for name, preset in presets.items():
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{name}.*")]
        assert sorted(preset.weights) == sorted(tags), name
        assert next(iter(preset.weights)) == get_pretrained_cfg(name).tag, name
        for tag, ours in preset.weights.items():
            theirs = get_pretrained_cfg(f"{name}.{tag}").to_dict()
            case = f"{name}.{tag}"
            assert ours.hub_id == theirs["hf_hub_id"], case
            assert ours.num_classes == theirs["num_classes"], case
            assert (3, *ours.input_size) == tuple(theirs["input_size"]), case
            assert (tuple(ours.mean), tuple(ours.std)) == (tuple(theirs["mean"]), tuple(theirs["std"])), case
            assert (ours.crop_pct, ours.interpolation) == (theirs["crop_pct"], theirs["interpolation"]), case
            assert ours.license == theirs["license"], case
            classifier = theirs["classifier"]
            assert preset.classifier == (classifier if isinstance(classifier, tuple) else (classifier,)), case
