"""vit-small-datasets-flax: ViT for Small-Size Datasets (SPT + LSA) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from vit_layers_flax import load_torch_state_dict
from vit_small_datasets_flax.configs import CONFIGS
from vit_small_datasets_flax.convert import from_vit_pytorch
from vit_small_datasets_flax.lsa import LSA
from vit_small_datasets_flax.spt import SPT
from vit_small_datasets_flax.vit import ViT

__version__ = version("vit-small-datasets-flax")
__all__ = ["CONFIGS", "LSA", "SPT", "ViT", "from_vit_pytorch", "load_torch_state_dict"]
