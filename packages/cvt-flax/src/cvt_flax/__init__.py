"""cvt-flax: the Convolutional vision Transformer (CvT) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from cvt_flax.attention import ConvAttention, DepthwiseSeparableConv
from cvt_flax.configs import CONFIGS
from cvt_flax.convert import from_vit_pytorch
from cvt_flax.cvt import CvT
from vit_layers_flax import load_torch_state_dict

__version__ = version("cvt-flax")
__all__ = [
    "CONFIGS",
    "ConvAttention",
    "CvT",
    "DepthwiseSeparableConv",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
