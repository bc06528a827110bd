"""crossformer-flax: CrossFormer (cross-scale attention) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from crossformer_flax.attention import WindowAttention
from crossformer_flax.convert import from_vit_pytorch
from crossformer_flax.cross_embed import CrossEmbedLayer
from crossformer_flax.crossformer import CrossFormer, CrossFormerBlock
from crossformer_flax.position_bias import (
    DynamicPositionBias,
    relative_position_indices,
    relative_positions,
)
from crossformer_flax.windows import merge_windows, partition_windows
from vit_layers_flax import load_torch_state_dict

__version__ = version("crossformer-flax")
__all__ = [
    "CrossEmbedLayer",
    "CrossFormer",
    "CrossFormerBlock",
    "DynamicPositionBias",
    "WindowAttention",
    "from_vit_pytorch",
    "load_torch_state_dict",
    "merge_windows",
    "partition_windows",
    "relative_position_indices",
    "relative_positions",
]
