"""nest-flax: the Nested Hierarchical Transformer (NesT) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from nest_flax.aggregate import Aggregate
from nest_flax.configs import CONFIGS
from nest_flax.convert import (
    TIMM_ARCHITECTURE,
    from_timm,
    from_vit_pytorch,
    resample_block_position_embedding,
)
from nest_flax.nest import Hierarchy, NesT
from nest_flax.presets import PRESETS
from vit_layers_flax import load_torch_state_dict

__version__ = version("nest-flax")
__all__ = [
    "CONFIGS",
    "PRESETS",
    "TIMM_ARCHITECTURE",
    "Aggregate",
    "Hierarchy",
    "NesT",
    "from_timm",
    "from_vit_pytorch",
    "load_torch_state_dict",
    "resample_block_position_embedding",
]
