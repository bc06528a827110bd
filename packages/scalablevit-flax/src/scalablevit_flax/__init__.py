"""scalablevit-flax: ScalableViT (scalable self-attention, interactive window attention) in JAX/Flax,
with parity to vit-pytorch."""

from importlib.metadata import version

from scalablevit_flax.attention import InteractiveWindowedSelfAttention, ScalableSelfAttention
from scalablevit_flax.block import ScalableBlock
from scalablevit_flax.configs import CONFIGS
from scalablevit_flax.convert import from_vit_pytorch
from scalablevit_flax.scalable_vit import ScalableViT, Stage
from vit_layers_flax import load_torch_state_dict

__version__ = version("scalablevit-flax")
__all__ = [
    "CONFIGS",
    "InteractiveWindowedSelfAttention",
    "ScalableBlock",
    "ScalableSelfAttention",
    "ScalableViT",
    "Stage",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
