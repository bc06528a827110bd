"""levit-flax: LeViT (a Vision Transformer in ConvNet's clothing) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from levit_flax.attention import ConvNormAttention, attention_bias_indices
from levit_flax.configs import CONFIGS
from levit_flax.conv_norm import ConvNorm
from levit_flax.convert import from_vit_pytorch
from levit_flax.feed_forward import HardswishFeedForward
from levit_flax.levit import LeViT, StageLayout
from levit_flax.stage import Block, Stage
from vit_layers_flax import load_torch_state_dict

__version__ = version("levit-flax")
__all__ = [
    "CONFIGS",
    "Block",
    "ConvNorm",
    "ConvNormAttention",
    "HardswishFeedForward",
    "LeViT",
    "Stage",
    "StageLayout",
    "attention_bias_indices",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
