"""cvt-flax: the Convolutional vision Transformer (CvT) in JAX/Flax, with parity to vit-pytorch and
to Hugging Face transformers' CvT, whose pretrained weights it loads."""

from importlib.metadata import version

from cvt_flax.attention import ConvAttention, DepthwiseSeparableConv
from cvt_flax.configs import CONFIGS
from cvt_flax.convert import from_transformers, from_vit_pytorch
from cvt_flax.cvt import CvT
from cvt_flax.presets import PRESETS
from vit_layers_flax import load_torch_state_dict

__version__ = version("cvt-flax")
__all__ = [
    "CONFIGS",
    "PRESETS",
    "ConvAttention",
    "CvT",
    "DepthwiseSeparableConv",
    "from_transformers",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
