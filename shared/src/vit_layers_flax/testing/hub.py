"""An offline Hugging Face cache for tests of ``pretrained=True``: the download code runs,
the network is never asked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: the commit hash the cache's ``refs/main`` names (any 40 hex digits)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def offline_hub(cache: str | Path, monkeypatch, weights: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``weights`` (preset name -> state_dict) into ``cache`` as each name's published
    file, in the hub's layout (``models--<org>--<repo>/refs/main``,
    ``snapshots/<commit>/<filename>``), and point ``huggingface_hub`` at it, offline
    (``HF_HUB_OFFLINE=1``), through pytest's ``monkeypatch``. A ``.safetensors`` filename is
    written with safetensors, any other (``pytorch_model.bin``) with ``torch.save``, as the
    publisher's file is."""
    from huggingface_hub import constants
    from safetensors.numpy import save_file

    from vit_layers_flax.registry import pretrained_config

    cache = Path(cache)
    for name, state_dict in weights.items():
        config = pretrained_config(name)
        snapshot = cache / ("models--" + config.hub_id.replace("/", "--")) / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
        arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in state_dict.items()}
        if config.filename.endswith(".safetensors"):
            save_file(arrays, str(snapshot / config.filename))
        else:
            import torch

            torch.save(
                {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, snapshot / config.filename
            )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
