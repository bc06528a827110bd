"""crossvit-flax: CrossViT (Cross-Attention Multi-Scale Vision Transformer) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from crossvit_flax.configs import CONFIGS
from crossvit_flax.convert import from_timm, from_vit_pytorch
from crossvit_flax.cross_attention import CrossAttention, CrossAttentionLayer, CrossTransformer, Projection
from crossvit_flax.cross_vit import ConvPatchEmbedding, CrossViT, ImageEmbedder, MultiScaleBlock
from crossvit_flax.presets import PRESETS
from vit_layers_flax import load_torch_state_dict

__version__ = version("crossvit-flax")
__all__ = [
    "CONFIGS",
    "PRESETS",
    "ConvPatchEmbedding",
    "CrossAttention",
    "CrossAttentionLayer",
    "CrossTransformer",
    "CrossViT",
    "ImageEmbedder",
    "MultiScaleBlock",
    "Projection",
    "from_timm",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
