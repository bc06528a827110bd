"""t2t-vit-flax: Tokens-to-Token ViT (T2T-ViT) in JAX/Flax, with parity to vit-pytorch."""

from importlib.metadata import version

from t2t_vit_flax.configs import CONFIGS
from t2t_vit_flax.convert import from_vit_pytorch
from t2t_vit_flax.t2t_vit import T2TViT
from t2t_vit_flax.tokens_to_token import TokensToToken
from vit_layers_flax import load_torch_state_dict

__version__ = version("t2t-vit-flax")
__all__ = ["CONFIGS", "T2TViT", "TokensToToken", "from_vit_pytorch", "load_torch_state_dict"]
