"""cait-flax: CaiT (Going deeper with Image Transformers) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from cait_flax.cait import CaiT
from cait_flax.configs import CONFIGS
from cait_flax.convert import TIMM_ARCHITECTURE, from_timm, from_vit_pytorch
from cait_flax.layer_dropout import layer_keep_mask
from cait_flax.layer_scale import LayerScale, initial_layer_scale
from cait_flax.presets import PRESETS
from cait_flax.talking_heads import TalkingHeadsAttention
from cait_flax.transformer import LayerScaleBlock, LayerScaleTransformer
from vit_layers_flax import load_torch_state_dict

__version__ = version("cait-flax")
__all__ = [
    "CONFIGS",
    "PRESETS",
    "TIMM_ARCHITECTURE",
    "CaiT",
    "LayerScale",
    "LayerScaleBlock",
    "LayerScaleTransformer",
    "TalkingHeadsAttention",
    "from_timm",
    "from_vit_pytorch",
    "initial_layer_scale",
    "layer_keep_mask",
    "load_torch_state_dict",
]
