"""vision-transformer-flax: the Vision Transformer (ViT) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from vision_transformer_flax.configs import CONFIGS
from vision_transformer_flax.convert import from_timm, from_vit_pytorch
from vision_transformer_flax.presets import PRESETS
from vision_transformer_flax.vit import ViT
from vit_layers_flax import load_torch_state_dict

__version__ = version("vision-transformer-flax")
__all__ = ["CONFIGS", "PRESETS", "ViT", "from_timm", "from_vit_pytorch", "load_torch_state_dict"]
