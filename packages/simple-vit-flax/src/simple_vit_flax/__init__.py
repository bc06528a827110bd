"""simple-vit-flax: SimpleViT ("Better plain ViT baselines") in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from simple_vit_flax.configs import CONFIGS
from simple_vit_flax.convert import from_vit_pytorch
from simple_vit_flax.simple_vit import SimpleViT
from vit_layers_flax import load_torch_state_dict

__version__ = version("simple-vit-flax")
__all__ = ["CONFIGS", "SimpleViT", "from_vit_pytorch", "load_torch_state_dict"]
