"""deepvit-flax: DeepViT ("Towards Deeper Vision Transformer") in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from deepvit_flax.configs import CONFIGS
from deepvit_flax.convert import from_vit_pytorch
from deepvit_flax.deepvit import DeepViT
from deepvit_flax.re_attention import ReAttention
from vit_layers_flax import load_torch_state_dict

__version__ = version("deepvit-flax")
__all__ = ["CONFIGS", "DeepViT", "ReAttention", "from_vit_pytorch", "load_torch_state_dict"]
