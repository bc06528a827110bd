"""cvt-flax: the Convolutional vision Transformer (CvT) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from cvt_flax.attention import ConvAttention
from cvt_flax.convert import from_vit_pytorch
from cvt_flax.cvt import CvT
from cvt_flax.depthwise_separable import DepthWiseConv2d
from vit_layers_flax import load_torch_state_dict

__version__ = version("cvt-flax")
__all__ = [
    "ConvAttention",
    "CvT",
    "DepthWiseConv2d",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
