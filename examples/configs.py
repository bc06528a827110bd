"""How ``train.py`` trains each architecture: the model's small configuration (its package's
``CONFIGS["small"]``) and the optimisation settings reviewed for it (:data:`RECIPES`), or a
pretrained preset of the installed model packages (``vit_layers_flax.list_models()``) with
one fine-tuning default for them all (:class:`PresetRecipe`); :func:`get_recipe` finds either.

``num_classes`` and ``channels`` come from the data (scikit-learn's 8x8 digits, upsampled to
``image_size``). Sizes are chosen so that every architecture trains on the 2-core CPU in
minutes; they are starting points for your own data, not tuned results.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
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

    #: recipes train from scratch on the training split's statistics (see :class:`PresetRecipe`)
    normalization = None

    def build(self, *, num_classes: int, channels: int, image_size: int | None = None, **overrides: Any):
        """The Flax model for data with ``num_classes`` classes and ``channels`` channels, at
        ``image_size`` (default: the recipe's); ``overrides`` (``dtype``, ``param_dtype``, ...)
        go to the constructor."""
        fields = self._fields()
        kwargs = dict(self.kwargs, num_classes=num_classes, **overrides)
        if "image_size" in fields:
            kwargs["image_size"] = self.image_size if image_size is None else image_size
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


#: ``--pretrained hub``: the preset's published weights, from the Hugging Face Hub
HUB = "hub"


@dataclasses.dataclass(frozen=True)
class PresetRecipe:
    """How ``train.py`` trains a preset of ``vit_layers_flax.list_models()`` (``name`` or
    ``name.tag``): fine-tuning from its weights (``--pretrained``) or from scratch, with one
    default for every preset (few epochs at a low learning rate, as fine-tuning wants).

    Its images are RGB (gray ones repeated over the three channels, as timm users feed gray
    data to RGB weights) normalised with its weights' mean and std (``pretrained_config``),
    at a small :attr:`image_size` by default, so that it runs on a CPU (a position
    embedding is resampled to it) and the classifier is a new one for the data's classes.
    """

    name: str
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1

    @property
    def preset(self):
        from vit_layers_flax import get_preset

        return get_preset(self.name)[0]

    @property
    def weights(self):
        """The ``PretrainedConfig`` of the preset's (default or tagged) weights, ``None`` without."""
        from vit_layers_flax import get_preset

        preset, tag = get_preset(self.name)
        return None if tag is None else preset.weights[tag]

    @property
    def image_size(self) -> int:
        """The default square size, small enough for a CPU: the smallest size the model takes
        that is at least 28 pixels and, where the configuration fixes the size (a position
        embedding: ViT, DeiT, CaiT ...), two patches wide and a multiple of the patch size (patch
        16: 32, 32: 64, 14: 28, 8: 32), or at least 32 where it fixes the size otherwise
        (LeViT: 32, CrossViT: 120); the preset's own size where no smaller one fits."""
        preset = self.preset
        sizes = preset.build().input_sizes()
        patch = preset.config.get("patch_size")
        if sizes.step:  # the model takes minimum + k * step
            candidates, need = range(sizes.minimum, sizes.minimum + 64 * sizes.step, sizes.step), 28
        elif patch is not None:  # its configuration fixes the size: try multiples of the patch
            patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
            step = math.lcm(*patch)
            candidates, need = range(step, sizes.minimum, step), max(2 * max(patch), 28)
        else:  # a fixed size set otherwise (LeViT's attention biases, CrossViT's two grids)
            candidates, need = range(32, sizes.minimum, 8), 32
        return next(
            (size for size in candidates if size >= need and self._takes(size) is None), sizes.minimum
        )

    def _takes(self, image_size: int) -> str | None:
        """``None`` where the model takes ``image_size`` x ``image_size`` images, else why not."""
        try:
            sizes = self.preset.build(image_size=image_size).input_sizes()
        except ValueError as error:
            return str(error)
        if image_size not in sizes:
            return f"{self.name} takes {sizes.minimum}" + (
                f", {sizes.minimum + sizes.step}, ..." if sizes.step else ""
            )
        return None

    def check_image_size(self, image_size: int) -> None:
        """Stop with the model's own message unless it takes ``image_size`` x ``image_size`` images."""
        if (problem := self._takes(image_size)) is not None:
            raise SystemExit(f"--image-size {image_size}: {problem} (default {self.image_size})")

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` per channel of images in [0, 1]: the weights' (``None`` without weights)."""
        weights = self.weights
        return None if weights is None else (tuple(weights.mean), tuple(weights.std))

    def input_channels(self, channels: int) -> int:
        """3: the presets' weights are RGB (gray images are repeated over the three channels)."""
        return 3

    def create(
        self, *, num_classes: int, channels: int, image_size: int, pretrained: str | None, rng, **kwargs
    ):
        """``(model, variables)`` from ``vit_layers_flax.create_model``: ``pretrained`` is
        :data:`HUB` (the published weights), a checkpoint's path or ``None`` (initialised from
        ``rng``, which also initialises the new classifier); ``kwargs`` set model fields."""
        from vit_layers_flax import create_model

        source = True if pretrained == HUB else False if pretrained is None else pretrained
        return create_model(
            self.name,
            pretrained=source,
            num_classes=num_classes,
            image_size=image_size,
            channels=channels,
            rng=rng,
            **kwargs,
        )


def preset_names() -> list[str]:
    """The names of the installed model packages' presets (``vit_layers_flax.list_models()``)."""
    from vit_layers_flax import list_models

    return list_models()


def get_recipe(arch: str) -> Recipe | PresetRecipe:
    """The recipe of ``arch``: one of :data:`RECIPES`, or a preset name (``name`` or
    ``name.tag``); stops with a message naming the choices for anything else."""
    if arch in RECIPES:
        return RECIPES[arch]
    from vit_layers_flax import get_preset

    try:
        get_preset(arch)
    except ValueError as error:
        near = difflib.get_close_matches(arch, list(RECIPES), n=3)
        hint = f" (did you mean {near}?)" if near else ""
        raise SystemExit(
            f"--arch {arch!r}: not one of the {len(RECIPES)} recipes{hint}: {', '.join(sorted(RECIPES))}; "
            f"nor a pretrained preset: {error}"
        ) from None
    return PresetRecipe(arch)
