"""parallel-vit-flax: the parallel-branch ViT of "Three things everyone should know about Vision
Transformers" in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from parallel_vit_flax.configs import CONFIGS
from parallel_vit_flax.convert import from_vit_pytorch
from parallel_vit_flax.parallel_block import ParallelTransformerBlock
from parallel_vit_flax.parallel_vit import ViT
from vit_layers_flax import load_torch_state_dict

__version__ = version("parallel-vit-flax")
__all__ = ["CONFIGS", "ParallelTransformerBlock", "ViT", "from_vit_pytorch", "load_torch_state_dict"]
