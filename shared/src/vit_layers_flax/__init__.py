"""vit-layers-flax: the layers the vit-flax model packages share.

Patch embedding, pre-norm attention and feed-forward blocks, the transformer stack,
channel LayerNorm, torch-compatible BatchNorm, sin-cos position embedding, depthwise/PEG convolutions, stochastic
layer dropping, input validation and the vit-pytorch weight-conversion helpers. The
contract test suite every model package runs lives in :mod:`vit_layers_flax.testing`.
"""

from importlib.metadata import version

from vit_layers_flax.activation import gelu
from vit_layers_flax.attention import (
    Attention,
    SoftmaxAttention,
    apply_attention,
    attention_weights,
    split_qkv,
)
from vit_layers_flax.batch_norm import BatchNorm
from vit_layers_flax.checkpoint import load_torch_state_dict
from vit_layers_flax.conversion import (
    ConversionError,
    StateDict,
    attention_params,
    feed_forward_params,
    finalize,
    mlp_head_params,
    patch_embedding_params,
    stack_layers,
    transformer_params,
)
from vit_layers_flax.convolution import PEG, Conv, DepthwiseConv, depthwise_conv
from vit_layers_flax.dense import Dense
from vit_layers_flax.feed_forward import FeedForward
from vit_layers_flax.head import MlpHead
from vit_layers_flax.layer_drop import layer_keep_mask
from vit_layers_flax.layer_norm import ChanLayerNorm, LayerNorm, layer_norm
from vit_layers_flax.patch_embedding import PatchEmbedding, patchify
from vit_layers_flax.position_embedding import posemb_sincos_2d
from vit_layers_flax.transformer import Transformer, TransformerBlock, apply_blocks
from vit_layers_flax.unfold import unfold, unfold_output_size
from vit_layers_flax.validation import cast_tuple, check_config, check_images, check_stage_size, pair
from vit_layers_flax.windows import merge_windows, partition_windows

__version__ = version("vit-layers-flax")

__all__ = [
    "PEG",
    "Attention",
    "BatchNorm",
    "ChanLayerNorm",
    "Conv",
    "ConversionError",
    "Dense",
    "DepthwiseConv",
    "FeedForward",
    "LayerNorm",
    "MlpHead",
    "PatchEmbedding",
    "SoftmaxAttention",
    "StateDict",
    "Transformer",
    "TransformerBlock",
    "apply_attention",
    "apply_blocks",
    "attention_params",
    "attention_weights",
    "cast_tuple",
    "check_config",
    "check_images",
    "check_stage_size",
    "depthwise_conv",
    "feed_forward_params",
    "finalize",
    "gelu",
    "layer_keep_mask",
    "layer_norm",
    "load_torch_state_dict",
    "merge_windows",
    "mlp_head_params",
    "pair",
    "partition_windows",
    "patch_embedding_params",
    "patchify",
    "posemb_sincos_2d",
    "split_qkv",
    "stack_layers",
    "transformer_params",
    "unfold",
    "unfold_output_size",
]
