"""twins-svt-flax: Twins-SVT (spatially separable vision Transformer) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from twins_svt_flax.attention import GlobalAttention, LocalAttention
from twins_svt_flax.block import TwinsBlock
from twins_svt_flax.configs import CONFIGS
from twins_svt_flax.convert import TIMM_ARCHITECTURE, from_timm, from_vit_pytorch
from twins_svt_flax.presets import PRESETS
from twins_svt_flax.twins_svt import ConvPatchEmbedding, TwinsSVT
from vit_layers_flax import load_torch_state_dict

__version__ = version("twins-svt-flax")
__all__ = [
    "CONFIGS",
    "PRESETS",
    "TIMM_ARCHITECTURE",
    "ConvPatchEmbedding",
    "GlobalAttention",
    "LocalAttention",
    "TwinsBlock",
    "TwinsSVT",
    "from_timm",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
