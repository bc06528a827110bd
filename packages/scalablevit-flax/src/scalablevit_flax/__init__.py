"""scalablevit-flax: ScalableViT (scalable self-attention, interactive window attention) in JAX/Flax,
with parity to vit-pytorch."""

from importlib.metadata import version

from scalablevit_flax.convert import from_vit_pytorch
from scalablevit_flax.interactive_windowed_attention import InteractiveWindowedSelfAttention
from scalablevit_flax.scalable_self_attention import ScalableSelfAttention
from scalablevit_flax.scalable_vit import ScalableViT, Stage
from scalablevit_flax.transformer import ScalableBlock, ScalableTransformer
from vit_layers_flax import load_torch_state_dict

__version__ = version("scalablevit-flax")
__all__ = [
    "InteractiveWindowedSelfAttention",
    "ScalableBlock",
    "ScalableSelfAttention",
    "ScalableTransformer",
    "ScalableViT",
    "Stage",
    "from_vit_pytorch",
    "load_torch_state_dict",
]
