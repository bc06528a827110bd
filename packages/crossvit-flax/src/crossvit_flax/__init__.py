"""crossvit-flax: CrossViT (Cross-Attention Multi-Scale Vision Transformer) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from crossvit_flax.convert import from_vit_pytorch
from crossvit_flax.cross_attention import CrossAttention, CrossTransformer, ProjectedCrossAttention
from crossvit_flax.cross_vit import CrossViT, ImageEmbedder
from crossvit_flax.multi_scale_encoder import MultiScaleBlock, MultiScaleEncoder
from vit_layers_flax import load_torch_state_dict

__version__ = version("crossvit-flax")
__all__ = [
    "CrossAttention",
    "CrossTransformer",
    "CrossViT",
    "ImageEmbedder",
    "MultiScaleBlock",
    "MultiScaleEncoder",
    "ProjectedCrossAttention",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
