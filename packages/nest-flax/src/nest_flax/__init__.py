"""nest-flax: the Nested Hierarchical Transformer (NesT) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from nest_flax.aggregate import Aggregate
from nest_flax.configs import CONFIGS
from nest_flax.convert import from_vit_pytorch
from nest_flax.nest import Hierarchy, NesT
from vit_layers_flax import load_torch_state_dict

__version__ = version("nest-flax")
__all__ = [
    "CONFIGS",
    "Aggregate",
    "Hierarchy",
    "NesT",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
