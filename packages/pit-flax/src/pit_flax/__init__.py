"""pit-flax: the Pooling-based Vision Transformer (PiT) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from pit_flax.configs import CONFIGS
from pit_flax.convert import from_timm, from_vit_pytorch
from pit_flax.pit import PiT
from pit_flax.pool import Pool
from pit_flax.presets import PRESETS
from vit_layers_flax import load_torch_state_dict

__version__ = version("pit-flax")
__all__ = ["CONFIGS", "PRESETS", "PiT", "Pool", "from_timm", "from_vit_pytorch", "load_torch_state_dict"]
