"""What the benchmark measures: every architecture, its vit-pytorch reference and its configurations.

* ``readme``: the package README's usage configuration (its package's
  ``CONFIGS["readme"]``), 3 channels.
* ``small``: the training recipe's configuration (``CONFIGS["small"]``, at
  ``examples/configs.py``'s image size), 3 channels and 10 classes.
* ``b16``: ViT-B/16 at 224x224 (ViT only: ``CONFIGS["vit_b16"]``), for model FLOPs
  utilisation on a GPU.

Both sides are built from the same keywords: vit-pytorch uses the same hyperparameter
names, and a keyword the reference lacks (``channels`` where it hard-codes 3,
``image_size`` where it takes any size) is left out for it only.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from configs import RECIPES  # examples/configs.py

#: the keywords a reference may lack because it hard-codes or does not need them
OPTIONAL_FOR_REFERENCE = {"channels", "image_size"}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One architecture: its Flax class and its vit-pytorch class.

    Attributes:
      module, cls: the Flax model (``vision_transformer_flax``, ``ViT``); the module's
        ``CONFIGS`` holds its configurations.
      reference: the vit-pytorch module and class (``vit``, ``ViT``).
    """

    module: str
    cls: str
    reference: tuple[str, str]

    def configs(self) -> Mapping[str, Mapping[str, Any]]:
        return importlib.import_module(self.module).CONFIGS

    def model_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)


@dataclasses.dataclass(frozen=True)
class Config:
    """One model configuration to measure: keywords for both sides and the image size."""

    arch: str
    name: str
    kwargs: Mapping[str, Any]
    image_size: int

    def flax_model(self, **overrides: Any):
        """The Flax model; ``overrides`` (``dtype``, ``attention_implementation``) are
        passed where the class has such a field."""
        arch = ARCHITECTURES[self.arch]
        cls = getattr(importlib.import_module(arch.module), arch.cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = dict(self.kwargs)
        kwargs.update({k: v for k, v in overrides.items() if k in fields and v is not None})
        return cls(**{k: v for k, v in kwargs.items() if k in fields or k not in OPTIONAL_FOR_REFERENCE})

    def torch_model(self):
        """The vit-pytorch model (``torch.nn.Module``), with the same keywords."""
        from vit_layers_flax.testing.reference import load_reference

        module, name = ARCHITECTURES[self.arch].reference
        cls = getattr(load_reference(module), name)
        accepted = inspect.signature(cls).parameters
        missing = set(self.kwargs) - set(accepted)
        if missing - OPTIONAL_FOR_REFERENCE:
            raise ValueError(f"{self.arch}: vit-pytorch's {name} has no {sorted(missing)}")
        return cls(**{k: v for k, v in self.kwargs.items() if k in accepted})


ARCHITECTURES: dict[str, Architecture] = {
    "vit": Architecture("vision_transformer_flax", "ViT", ("vit", "ViT")),
    "simple-vit": Architecture("simple_vit_flax", "SimpleViT", ("simple_vit", "SimpleViT")),
    "deepvit": Architecture("deepvit_flax", "DeepViT", ("deepvit", "DeepViT")),
    "cait": Architecture("cait_flax", "CaiT", ("cait", "CaiT")),
    "parallel-vit": Architecture("parallel_vit_flax", "ViT", ("parallel_vit", "ViT")),
    "patch-merger": Architecture("patch_merger_flax", "ViT", ("vit_with_patch_merger", "ViT")),
    "vit-small-datasets": Architecture("vit_small_datasets_flax", "ViT", ("vit_for_small_dataset", "ViT")),
    "t2t-vit": Architecture("t2t_vit_flax", "T2TViT", ("t2t", "T2TViT")),
    "pit": Architecture("pit_flax", "PiT", ("pit", "PiT")),
    "cvt": Architecture("cvt_flax", "CvT", ("cvt", "CvT")),
    "levit": Architecture("levit_flax", "LeViT", ("levit", "LeViT")),
    "nest": Architecture("nest_flax", "NesT", ("nest", "NesT")),
    "crossvit": Architecture("crossvit_flax", "CrossViT", ("cross_vit", "CrossViT")),
    "twins-svt": Architecture("twins_svt_flax", "TwinsSVT", ("twins_svt", "TwinsSVT")),
    "crossformer": Architecture("crossformer_flax", "CrossFormer", ("crossformer", "CrossFormer")),
    "regionvit": Architecture("regionvit_flax", "RegionViT", ("regionvit", "RegionViT")),
    "scalablevit": Architecture("scalablevit_flax", "ScalableViT", ("scalable_vit", "ScalableViT")),
}


def _image_size(arch: str, kwargs: Mapping[str, Any], at_least: int = 224) -> int:
    """The configuration's ``image_size``, or for models that take any size the smallest side
    they accept from ``at_least`` on."""
    if "image_size" in kwargs:
        return kwargs["image_size"]
    sizes = ARCHITECTURES[arch].model_class()(**kwargs).input_sizes()
    if sizes.step == 0 or sizes.minimum >= at_least:
        return sizes.minimum
    return sizes.minimum + -(-(at_least - sizes.minimum) // sizes.step) * sizes.step


CONFIG_NAMES = ("small", "readme", "b16")


def config(arch: str, name: str) -> Config | None:
    """The configuration ``name`` of ``arch``; ``None`` where it has none (``b16`` is ViT's)."""
    if name == "readme":
        kwargs = dict(ARCHITECTURES[arch].configs()["readme"])
        return Config(arch, name, dict(kwargs, channels=3), _image_size(arch, kwargs))
    if name == "small":
        recipe = RECIPES[arch]
        kwargs = dict(recipe.kwargs, num_classes=10, channels=3, image_size=recipe.image_size)
        return Config(arch, name, kwargs, recipe.image_size)
    if name == "b16":
        if arch != "vit":
            return None
        return Config(arch, name, dict(ARCHITECTURES[arch].configs()["vit_b16"], channels=3), 224)
    raise ValueError(f"unknown configuration {name!r}; expected one of {CONFIG_NAMES}")
