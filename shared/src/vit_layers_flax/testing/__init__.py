"""The shared contract test suite and parity helpers (needs pytest; parity needs torch).

Usage in a model package's ``tests/test_contract.py``::

    from vit_layers_flax.testing import ContractSuite, ModelCase
    from vision_transformer_flax import ViT, from_vit_pytorch

    class TestViT(ContractSuite):
        model_cls = ViT
        convert = staticmethod(from_vit_pytorch)
        reference = ("vit", "ViT")
        cases = [ModelCase("small", dict(image_size=32, ...), (2, 32, 32, 3)), ...]
"""

from vit_layers_flax.testing.contract import (
    BF16_RTOL,
    PARITY_RTOL,
    BatchNormContractSuite,
    Built,
    ContractSuite,
    ModelCase,
    assert_parity,
    enable_x64,
    random_variables,
    relative_error,
)
from vit_layers_flax.testing.hub import offline_hub
from vit_layers_flax.testing.readme import readme_python_blocks, run_readme_usage
from vit_layers_flax.testing.reference import (
    build_reference,
    build_timm_reference,
    check_timm_pretrained_configs,
    load_reference,
    numpy_state_dict,
    parameter_count,
    perturb,
    reference_outputs,
    sample_images,
    timm_features,
)

__all__ = [
    "BF16_RTOL",
    "PARITY_RTOL",
    "BatchNormContractSuite",
    "Built",
    "ContractSuite",
    "ModelCase",
    "assert_parity",
    "build_reference",
    "build_timm_reference",
    "check_timm_pretrained_configs",
    "enable_x64",
    "load_reference",
    "numpy_state_dict",
    "offline_hub",
    "parameter_count",
    "perturb",
    "random_variables",
    "readme_python_blocks",
    "reference_outputs",
    "relative_error",
    "run_readme_usage",
    "sample_images",
    "timm_features",
]
