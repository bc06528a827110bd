"""The root README's quick start runs as written (every package is installed here)."""

from pathlib import Path

import jax
import pytest

from vit_layers_flax.testing import build_timm_reference, offline_hub, run_readme_usage

ROOT = Path(__file__).resolve().parents[2]


def test_root_readme_runs_as_written():
    quick_start, embeddings, backbone, nnx_example = run_readme_usage(ROOT / "README.md")
    assert quick_start["logits"].shape == (8, 10)
    assert embeddings["embeddings"].shape == (8, 192)
    assert [m.shape[-1] for m in backbone["maps"]] == [i.channels for i in backbone["backbone"].feature_info]
    assert nnx_example["logits"].shape == (8, 10) and bool(jax.numpy.isfinite(nnx_example["loss"]))


@pytest.mark.parity
def test_root_readme_pretrained_weights_run_as_written(tmp_path, monkeypatch):
    """The ```python hub block, against an offline Hugging Face cache of timm weights."""
    pytest.importorskip("timm")
    reference = build_timm_reference("vit_small_patch16_224")
    weights = {k: v.numpy() for k, v in reference.state_dict().items()}
    offline_hub(tmp_path, monkeypatch, {"vit_small_patch16_224": weights})
    (namespace,) = run_readme_usage(ROOT / "README.md", tag="hub")
    assert namespace["model"].num_classes == 10 and namespace["config"].mean == (0.5, 0.5, 0.5)
    assert namespace["variables"]["params"]["embedding"]["pos_embedding"].shape == (1 + 16, 384)
