"""The root README's quick start runs as written (every package is installed here)."""

from pathlib import Path

from vit_layers_flax.testing import run_readme_usage

ROOT = Path(__file__).resolve().parents[2]


def test_root_readme_quick_start_runs_as_written():
    (namespace,) = run_readme_usage(ROOT / "README.md")
    assert namespace["logits"].shape == (8, 10)
