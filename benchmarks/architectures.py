"""What the benchmark measures: every architecture, its vit-pytorch reference and its configurations.

* ``seed``: the configuration of the seed usage block (the package README's usage), 3
  channels, 1000 classes.
* ``small``: ``examples/configs.py``'s training recipe (the one place the small
  configurations live), with 3 channels and 10 classes.
* ``b16``: ViT-B/16 at 224x224 (ViT only), for model FLOPs utilisation on a GPU.

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
    """One architecture: its Flax class, its vit-pytorch class and its seed configuration.

    Attributes:
      module, cls: the Flax model (``vision_transformer_flax``, ``ViT``).
      reference: the vit-pytorch module and class (``vit``, ``ViT``).
      seed: the seed configuration's keywords (as in the package README).
      seed_image_size: the seed configuration's square image size.
    """

    module: str
    cls: str
    reference: tuple[str, str]
    seed: Mapping[str, Any]
    seed_image_size: int


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


def _vit(patch_size: int = 32) -> dict[str, Any]:
    return dict(
        image_size=256,
        patch_size=patch_size,
        num_classes=1000,
        dim=1024,
        depth=6,
        heads=16,
        mlp_dim=2048,
        dropout=0.1,
        emb_dropout=0.1,
    )


def _stages(**stages: Mapping[str, Any]) -> dict[str, Any]:
    """``s1=dict(emb_dim=64)`` -> ``{"s1_emb_dim": 64}`` (CvT's and Twins' stage keywords)."""
    return {f"{stage}_{key}": value for stage, kwargs in stages.items() for key, value in kwargs.items()}


def _twins_stage(emb_dim: int, patch_size: int, depth: int) -> dict[str, Any]:
    return dict(emb_dim=emb_dim, patch_size=patch_size, local_patch_size=7, global_k=7, depth=depth)


def _cvt_stage(emb_dim: int, emb_kernel: int, emb_stride: int, heads: int, depth: int) -> dict[str, Any]:
    return dict(
        emb_dim=emb_dim,
        emb_kernel=emb_kernel,
        emb_stride=emb_stride,
        proj_kernel=3,
        kv_proj_stride=2,
        heads=heads,
        depth=depth,
        mlp_mult=4,
    )


ARCHITECTURES: dict[str, Architecture] = {
    "vit": Architecture("vision_transformer_flax", "ViT", ("vit", "ViT"), _vit(), 256),
    "simple-vit": Architecture(
        "simple_vit_flax",
        "SimpleViT",
        ("simple_vit", "SimpleViT"),
        dict(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048),
        256,
    ),
    "deepvit": Architecture("deepvit_flax", "DeepViT", ("deepvit", "DeepViT"), _vit(), 256),
    "cait": Architecture(
        "cait_flax",
        "CaiT",
        ("cait", "CaiT"),
        dict(_vit(), depth=12, cls_depth=2, layer_dropout=0.05),
        256,
    ),
    "parallel-vit": Architecture(
        "parallel_vit_flax",
        "ViT",
        ("parallel_vit", "ViT"),
        dict(_vit(16), heads=8, num_parallel_branches=2),
        256,
    ),
    "patch-merger": Architecture(
        "patch_merger_flax",
        "ViT",
        ("vit_with_patch_merger", "ViT"),
        dict(_vit(16), depth=12, heads=8, patch_merge_layer=6, patch_merge_num_tokens=8),
        256,
    ),
    "vit-small-datasets": Architecture(
        "vit_small_datasets_flax", "ViT", ("vit_for_small_dataset", "ViT"), _vit(16), 256
    ),
    "t2t-vit": Architecture(
        "t2t_vit_flax",
        "T2TViT",
        ("t2t", "T2TViT"),
        dict(
            dim=512,
            image_size=224,
            depth=5,
            heads=8,
            mlp_dim=512,
            num_classes=1000,
            t2t_layers=((7, 4), (3, 2), (3, 2)),
        ),
        224,
    ),
    "pit": Architecture(
        "pit_flax",
        "PiT",
        ("pit", "PiT"),
        dict(
            image_size=224,
            patch_size=14,
            dim=256,
            num_classes=1000,
            depth=(3, 3, 3),
            heads=16,
            mlp_dim=2048,
            dropout=0.1,
            emb_dropout=0.1,
        ),
        224,
    ),
    "cvt": Architecture(
        "cvt_flax",
        "CvT",
        ("cvt", "CvT"),
        dict(
            num_classes=1000,
            dropout=0.0,
            **_stages(
                s1=_cvt_stage(64, 7, 4, heads=1, depth=1),
                s2=_cvt_stage(192, 3, 2, heads=3, depth=2),
                s3=_cvt_stage(384, 3, 2, heads=4, depth=10),
            ),
        ),
        256,
    ),
    "levit": Architecture(
        "levit_flax",
        "LeViT",
        ("levit", "LeViT"),
        dict(
            image_size=224,
            num_classes=1000,
            stages=3,
            dim=(256, 384, 512),
            depth=4,
            heads=(4, 6, 8),
            mlp_mult=2,
            dropout=0.1,
        ),
        224,
    ),
    "nest": Architecture(
        "nest_flax",
        "NesT",
        ("nest", "NesT"),
        dict(
            image_size=224,
            patch_size=4,
            dim=96,
            heads=3,
            num_hierarchies=3,
            block_repeats=(2, 2, 8),
            num_classes=1000,
        ),
        224,
    ),
    "crossvit": Architecture(
        "crossvit_flax",
        "CrossViT",
        ("cross_vit", "CrossViT"),
        dict(
            image_size=256,
            num_classes=1000,
            depth=4,
            sm_dim=192,
            sm_patch_size=16,
            sm_enc_depth=2,
            sm_enc_heads=8,
            sm_enc_mlp_dim=2048,
            lg_dim=384,
            lg_patch_size=64,
            lg_enc_depth=3,
            lg_enc_heads=8,
            lg_enc_mlp_dim=2048,
            cross_attn_depth=2,
            cross_attn_heads=8,
            dropout=0.1,
            emb_dropout=0.1,
        ),
        256,
    ),
    "twins-svt": Architecture(
        "twins_svt_flax",
        "TwinsSVT",
        ("twins_svt", "TwinsSVT"),
        dict(
            num_classes=1000,
            peg_kernel_size=3,
            dropout=0.0,
            **_stages(
                s1=_twins_stage(64, 4, depth=1),
                s2=_twins_stage(128, 2, depth=1),
                s3=_twins_stage(256, 2, depth=5),
                s4=_twins_stage(512, 2, depth=4),
            ),
        ),
        224,
    ),
    "crossformer": Architecture(
        "crossformer_flax",
        "CrossFormer",
        ("crossformer", "CrossFormer"),
        dict(
            num_classes=1000,
            dim=(64, 128, 256, 512),
            depth=(2, 2, 8, 2),
            global_window_size=(8, 4, 2, 1),
            local_window_size=7,
        ),
        224,
    ),
    "regionvit": Architecture(
        "regionvit_flax",
        "RegionViT",
        ("regionvit", "RegionViT"),
        dict(
            dim=(64, 128, 256, 512),
            depth=(2, 2, 8, 2),
            window_size=7,
            num_classes=1000,
            tokenize_local_3_conv=False,
            use_peg=False,
        ),
        224,
    ),
    "scalablevit": Architecture(
        "scalablevit_flax",
        "ScalableViT",
        ("scalable_vit", "ScalableViT"),
        dict(
            num_classes=1000,
            dim=64,
            heads=(2, 4, 8, 16),
            depth=(2, 2, 20, 2),
            ssa_dim_key=(40, 40, 40, 32),
            reduction_factor=(8, 4, 2, 1),
            window_size=(64, 32, None, None),
            dropout=0.1,
        ),
        256,
    ),
}

#: ViT-B/16 (An Image is Worth 16x16 Words, table 1) at 224x224, 1000 classes
VIT_B16 = dict(image_size=224, patch_size=16, num_classes=1000, dim=768, depth=12, heads=12, mlp_dim=3072)

CONFIG_NAMES = ("small", "seed", "b16")


def config(arch: str, name: str) -> Config | None:
    """The configuration ``name`` of ``arch``; ``None`` where it has none (``b16`` is ViT's)."""
    if name == "seed":
        spec = ARCHITECTURES[arch]
        return Config(arch, name, dict(spec.seed, channels=3), spec.seed_image_size)
    if name == "small":
        recipe = RECIPES[arch]
        kwargs = dict(recipe.kwargs, num_classes=10, channels=3, image_size=recipe.image_size)
        return Config(arch, name, kwargs, recipe.image_size)
    if name == "b16":
        return Config(arch, name, dict(VIT_B16, channels=3), 224) if arch == "vit" else None
    raise ValueError(f"unknown configuration {name!r}; expected one of {CONFIG_NAMES}")
