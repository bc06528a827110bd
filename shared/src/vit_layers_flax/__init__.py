"""vit-layers-flax: the layers the vit-flax model packages share.

Patch and token embeddings, pre-norm attention and feed-forward blocks, the one block-stacking
primitive (:func:`apply_blocks`) and the transformer built on it, torch-compatible norms,
convolutions with CPU-tuned lowerings, input validation, the vit-pytorch weight-conversion
helpers, the interface every model has (:class:`ImageClassifier`), its NNX bridge
(:func:`to_nnx`), and the registry of presets and pretrained weights (:func:`create_model`). The conventions every model follows are written once, in this package's README.
The contract test suite every model package runs lives in :mod:`vit_layers_flax.testing`.
"""

from importlib.metadata import version

from vit_layers_flax.activation import gelu
from vit_layers_flax.attention import (
    Attention,
    DotProductAttention,
    apply_attention,
    attention_weights,
    split_qkv,
)
from vit_layers_flax.batch_norm import BatchNorm
from vit_layers_flax.checkpoint import load_torch_state_dict
from vit_layers_flax.conversion import (
    ConversionError,
    StateDict,
    adapt_input_channels,
    attention_params,
    check_architecture,
    classifier_head_params,
    conv_feed_forward_params,
    feed_forward_params,
    model_variables,
    patch_embedding_params,
    resample_position_embedding,
    stack_layers,
    timm_block_params,
    transformer_params,
)
from vit_layers_flax.convolution import PEG, Conv, DepthwiseConv
from vit_layers_flax.dense import Dense
from vit_layers_flax.feed_forward import FeedForward
from vit_layers_flax.head import ClassifierHead
from vit_layers_flax.interface import (
    FeatureInfo,
    ImageClassifier,
    adapt_variables,
    block_features,
    classifier_paths,
    grid_reduction,
    token_map,
)
from vit_layers_flax.layer_norm import LayerNorm, layer_norm
from vit_layers_flax.module import Layer, Model
from vit_layers_flax.nnx import LinenModel, to_nnx
from vit_layers_flax.patch_embedding import PatchEmbedding, patchify
from vit_layers_flax.position_embedding import TokenEmbedding, pool_tokens, posemb_sincos_2d
from vit_layers_flax.registry import (
    ENTRY_POINT_GROUP,
    Preset,
    PretrainedConfig,
    create_model,
    download_weights,
    get_preset,
    list_models,
    pretrained_config,
)
from vit_layers_flax.resize import resize_bicubic, torch_bicubic_matrix
from vit_layers_flax.transformer import Transformer, TransformerBlock, apply_blocks
from vit_layers_flax.unfold import unfold
from vit_layers_flax.validation import (
    InputSizes,
    cast_tuple,
    check_config,
    check_images,
    check_stage_size,
    conv_output_size,
    pair,
)
from vit_layers_flax.windows import merge_windows, partition_windows

__version__ = version("vit-layers-flax")

__all__ = [
    "ENTRY_POINT_GROUP",
    "PEG",
    "Attention",
    "BatchNorm",
    "ClassifierHead",
    "Conv",
    "ConversionError",
    "Dense",
    "DepthwiseConv",
    "DotProductAttention",
    "FeatureInfo",
    "FeedForward",
    "ImageClassifier",
    "InputSizes",
    "Layer",
    "LayerNorm",
    "LinenModel",
    "Model",
    "PatchEmbedding",
    "Preset",
    "PretrainedConfig",
    "StateDict",
    "TokenEmbedding",
    "Transformer",
    "TransformerBlock",
    "adapt_input_channels",
    "adapt_variables",
    "apply_attention",
    "apply_blocks",
    "attention_params",
    "attention_weights",
    "block_features",
    "cast_tuple",
    "check_architecture",
    "check_config",
    "check_images",
    "check_stage_size",
    "classifier_head_params",
    "classifier_paths",
    "conv_feed_forward_params",
    "conv_output_size",
    "create_model",
    "download_weights",
    "feed_forward_params",
    "gelu",
    "get_preset",
    "grid_reduction",
    "layer_norm",
    "list_models",
    "load_torch_state_dict",
    "merge_windows",
    "model_variables",
    "pair",
    "partition_windows",
    "patch_embedding_params",
    "patchify",
    "pool_tokens",
    "posemb_sincos_2d",
    "pretrained_config",
    "resample_position_embedding",
    "resize_bicubic",
    "split_qkv",
    "stack_layers",
    "timm_block_params",
    "to_nnx",
    "token_map",
    "torch_bicubic_matrix",
    "transformer_params",
    "unfold",
]
