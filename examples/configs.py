"""How ``train.py`` trains each architecture: the model's small configuration (its package's
``CONFIGS["small"]``) and the optimisation settings reviewed for it.

``num_classes`` and ``channels`` come from the data (scikit-learn's 8x8 digits, upsampled to
``image_size``). Sizes are chosen so that every architecture trains on the 2-core CPU in
minutes; they are starting points for your own data, not tuned results.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to build and train one architecture on small images.

    Attributes:
      package: the pip distribution that provides the model.
      module, cls: where the model class lives (``vision_transformer_flax``, ``ViT``); the
        module's ``CONFIGS["small"]`` is the model configuration.
      image_size: the square size images are resized to.
      epochs, batch_size, learning_rate, weight_decay, warmup_epochs: optimisation.
    """

    package: str
    module: str
    cls: str
    image_size: int
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2

    @property
    def kwargs(self) -> dict[str, Any]:
        """The model's small configuration, without ``image_size`` (set from the recipe)."""
        configs = self._import().CONFIGS
        return {k: v for k, v in configs["small"].items() if k != "image_size"}

    def _import(self):
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as error:
            raise SystemExit(f"this architecture needs its package: pip install {self.package}") from error

    def model_class(self) -> type:
        return getattr(self._import(), self.cls)

    def _fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.model_class())}

    def build(self, *, num_classes: int, channels: int, **overrides: Any):
        """The Flax model for data with ``num_classes`` classes and ``channels`` channels;
        ``overrides`` (``dtype``, ``param_dtype``, ...) go to the constructor."""
        fields = self._fields()
        kwargs = dict(self.kwargs, num_classes=num_classes, **overrides)
        if "image_size" in fields:
            kwargs["image_size"] = self.image_size
        if "channels" in fields:
            kwargs["channels"] = channels
        return self.model_class()(**kwargs)

    def input_channels(self, channels: int) -> int:
        """The channel count the model receives: the data's, or 3 for models with a fixed
        RGB input (LeViT), to which gray images are given repeated over three channels."""
        return channels if "channels" in self._fields() else 3


def _recipe(package: str, cls: str, image_size: int, **settings: Any) -> Recipe:
    return Recipe(
        package, package.removesuffix("-flax").replace("-", "_") + "_flax", cls, image_size, **settings
    )


RECIPES: dict[str, Recipe] = {
    "vit": Recipe("vision-transformer-flax", "vision_transformer_flax", "ViT", 16),
    "simple-vit": _recipe("simple-vit-flax", "SimpleViT", 16),
    "deepvit": _recipe("deepvit-flax", "DeepViT", 16),
    "cait": _recipe("cait-flax", "CaiT", 16),
    "parallel-vit": _recipe("parallel-vit-flax", "ViT", 16),
    "patch-merger": _recipe("patch-merger-flax", "ViT", 16),
    "vit-small-datasets": _recipe("vit-small-datasets-flax", "ViT", 16),
    "t2t-vit": _recipe("t2t-vit-flax", "T2TViT", 16),
    "pit": _recipe("pit-flax", "PiT", 16),
    "cvt": _recipe("cvt-flax", "CvT", 16),
    # LeViT's recipe has two stages: see levit_flax.CONFIGS["small"]
    "levit": _recipe("levit-flax", "LeViT", 64),
    "nest": _recipe("nest-flax", "NesT", 16),
    "crossvit": _recipe("crossvit-flax", "CrossViT", 16),
    # vit-pytorch fixes every Twins attention at 8 heads of 64, so even small stages are
    # costly per step: 4 px patches and eight epochs; 1e-3 without warmup diverges
    "twins-svt": _recipe("twins-svt-flax", "TwinsSVT", 32, epochs=8, learning_rate=2e-4),
    # it reaches its final test accuracy by epoch 6 (docs/benchmarks.md)
    "crossformer": _recipe("crossformer-flax", "CrossFormer", 32, epochs=12),
    "regionvit": _recipe("regionvit-flax", "RegionViT", 32),
    "scalablevit": _recipe("scalablevit-flax", "ScalableViT", 32),
}

#: what ``train.py`` trains when no ``--arch`` is given
DEFAULT = "vit"
