"""patch-merger-flax: ViT with PatchMerger in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from patch_merger_flax.configs import CONFIGS
from patch_merger_flax.convert import from_vit_pytorch
from patch_merger_flax.patch_merger import PatchMerger
from patch_merger_flax.vit import ViT
from vit_layers_flax import load_torch_state_dict

__version__ = version("patch-merger-flax")
__all__ = ["CONFIGS", "PatchMerger", "ViT", "from_vit_pytorch", "load_torch_state_dict"]
