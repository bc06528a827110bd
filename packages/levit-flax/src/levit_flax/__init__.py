"""levit-flax: LeViT (a Vision Transformer in ConvNet's clothing) in JAX/Flax, with parity to vit-pytorch,
and timm's pretrained LeViT presets."""

from importlib.metadata import version

from levit_flax.attention import ConvNormAttention, attention_bias_indices
from levit_flax.configs import CONFIGS
from levit_flax.conv_norm import ConvNorm
from levit_flax.convert import TIMM_ARCHITECTURE, from_timm, from_vit_pytorch
from levit_flax.feed_forward import HardswishFeedForward
from levit_flax.levit import LeViT, StageLayout
from levit_flax.presets import PRESETS
from levit_flax.stage import Block, Stage, drop_path
from vit_layers_flax import load_torch_state_dict

__version__ = version("levit-flax")
__all__ = [
    "CONFIGS",
    "PRESETS",
    "TIMM_ARCHITECTURE",
    "Block",
    "ConvNorm",
    "ConvNormAttention",
    "HardswishFeedForward",
    "LeViT",
    "Stage",
    "StageLayout",
    "attention_bias_indices",
    "drop_path",
    "from_timm",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
