"""What the benchmark measures: every architecture, its vit-pytorch reference and its configurations.

* ``readme``: the package README's usage configuration (its package's
  ``CONFIGS["readme"]``), 3 channels.
* ``small``: the training recipe's configuration (``CONFIGS["small"]``, at
  ``examples/configs.py``'s image size), 3 channels and 10 classes.
* ``paper``: one paper-size variant per architecture (:data:`PAPER`: ViT-S/16, CaiT-XXS-24,
  CvT-13, LeViT-128 ...), with the reference's hyperparameters, at 224 px and 1000 classes
  (or the size and classes the paper trains with: CrossViT 240 px, ViT for small datasets
  Tiny-ImageNet's 64 px and 200), to compare speed at the sizes people train.
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


CONFIG_NAMES = ("small", "readme", "paper", "b16")

#: each architecture's paper-size configuration: the name of one of its package's
#: ``CONFIGS``, or (PatchMerger, which defines no variants of its own) the keywords
PAPER: dict[str, str | dict[str, Any]] = {
    "vit": "vit_s16",
    "simple-vit": "vit_s16",
    "deepvit": "deepvit_16b",
    "cait": "cait_xxs24",
    "parallel-vit": "vit_s18x2",
    # ViT-S/16 merging to 8 tokens after half its blocks, as the README's usage places it
    "patch-merger": dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=12, heads=6,
                         dim_head=64, mlp_dim=1536, patch_merge_layer=6, patch_merge_num_tokens=8),
    "vit-small-datasets": "sl_vit_tiny_imagenet",
    "t2t-vit": "t2t_vit_14",
    "pit": "pit_s",
    "cvt": "cvt_13",
    "levit": "levit_128",
    "nest": "nest_t",
    "crossvit": "crossvit_s",
    "twins-svt": "twins_svt_s",
    "crossformer": "crossformer_t",
    "regionvit": "regionvit_ti",
    "scalablevit": "scalablevit_s",
}  # fmt: skip


def config(arch: str, name: str) -> Config | None:
    """The configuration ``name`` of ``arch``; ``None`` where it has none (``b16`` is ViT's)."""
    if name == "readme":
        kwargs = dict(ARCHITECTURES[arch].configs()["readme"])
        return Config(arch, name, dict(kwargs, channels=3), _image_size(arch, kwargs))
    if name == "small":
        recipe = RECIPES[arch]
        kwargs = dict(recipe.kwargs, num_classes=10, channels=3, image_size=recipe.image_size)
        return Config(arch, name, kwargs, recipe.image_size)
    if name == "paper":
        kwargs = PAPER[arch]
        kwargs = dict(ARCHITECTURES[arch].configs()[kwargs] if isinstance(kwargs, str) else kwargs)
        kwargs.setdefault("num_classes", 1000)
        return Config(arch, name, dict(kwargs, channels=3), _image_size(arch, kwargs))
    if name == "b16":
        if arch != "vit":
            return None
        return Config(arch, name, dict(ARCHITECTURES[arch].configs()["vit_b16"], channels=3), 224)
    raise ValueError(f"unknown configuration {name!r}; expected one of {CONFIG_NAMES}")
