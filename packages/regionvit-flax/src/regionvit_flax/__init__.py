"""regionvit-flax: RegionViT (regional-to-local attention) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from regionvit_flax.configs import CONFIGS
from regionvit_flax.convert import from_vit_pytorch
from regionvit_flax.position_bias import local_rel_pos_indices
from regionvit_flax.r2l_transformer import (
    R2LBlock,
    R2LTransformer,
    merge_region_windows,
    partition_region_windows,
)
from regionvit_flax.regionvit import RegionViT, Stage
from regionvit_flax.tokenizers import LocalTokenizer3Conv, region_patches
from vit_layers_flax import load_torch_state_dict

__version__ = version("regionvit-flax")
__all__ = [
    "CONFIGS",
    "LocalTokenizer3Conv",
    "R2LBlock",
    "R2LTransformer",
    "RegionViT",
    "Stage",
    "from_vit_pytorch",
    "load_torch_state_dict",
    "local_rel_pos_indices",
    "merge_region_windows",
    "partition_region_windows",
    "region_patches",
]
