"""levit-flax: LeViT (a Vision Transformer in ConvNet's clothing) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from levit_flax.attention import Attention, attention_bias_indices
from levit_flax.conv_norm import ConvNorm
from levit_flax.convert import from_vit_pytorch
from levit_flax.feed_forward import FeedForward
from levit_flax.levit import LeViT
from levit_flax.transformer import Block, Transformer
from vit_layers_flax import load_torch_state_dict

__version__ = version("levit-flax")
__all__ = [
    "Attention",
    "Block",
    "ConvNorm",
    "FeedForward",
    "LeViT",
    "Transformer",
    "attention_bias_indices",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
