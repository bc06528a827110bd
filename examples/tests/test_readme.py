"""The root README's quick start runs as written (every package is installed here)."""

from pathlib import Path

import jax

from vit_layers_flax.testing import run_readme_usage

ROOT = Path(__file__).resolve().parents[2]


def test_root_readme_runs_as_written():
    quick_start, embeddings, backbone, nnx_example = run_readme_usage(ROOT / "README.md")
    assert quick_start["logits"].shape == (8, 10)
    assert embeddings["embeddings"].shape == (8, 192)
    assert [m.shape[-1] for m in backbone["maps"]] == [i.channels for i in backbone["backbone"].feature_info]
    assert nnx_example["logits"].shape == (8, 10) and bool(jax.numpy.isfinite(nnx_example["loss"]))
