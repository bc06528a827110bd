"""crossformer-flax: CrossFormer (cross-scale attention) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from crossformer_flax.attention import LongShortDistanceAttention
from crossformer_flax.configs import CONFIGS
from crossformer_flax.convert import from_vit_pytorch
from crossformer_flax.cross_embed import CrossEmbedLayer
from crossformer_flax.crossformer import CrossFormer, CrossFormerBlock
from crossformer_flax.position_bias import (
    DynamicPositionBias,
    relative_position_indices,
    relative_positions,
)
from vit_layers_flax import load_torch_state_dict

__version__ = version("crossformer-flax")
__all__ = [
    "CONFIGS",
    "CrossEmbedLayer",
    "CrossFormer",
    "CrossFormerBlock",
    "DynamicPositionBias",
    "LongShortDistanceAttention",
    "from_vit_pytorch",
    "load_torch_state_dict",
    "relative_position_indices",
    "relative_positions",
]
