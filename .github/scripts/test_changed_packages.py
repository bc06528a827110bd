"""changed_packages.py's names: only this repository's distributions (tmp_path trees; the
git diff itself is replaced by a list of paths)."""

from __future__ import annotations

import json
from pathlib import Path

import changed_packages
import pytest


def make_tree(root: Path, *packages: str) -> Path:
    (root / "shared").mkdir()
    (root / "shared" / "pyproject.toml").write_text('[project]\nname = "vit-layers-flax"\n')
    for name in packages:
        (root / "packages" / name).mkdir(parents=True)
        (root / "packages" / name / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    return root


def test_every_distribution_shared_first(tmp_path, capsys):
    make_tree(tmp_path, "vision-transformer-flax", "cait-flax", "t2t-vit-flax")
    (tmp_path / "packages" / "notes").mkdir()  # no pyproject.toml: not a distribution
    changed_packages.main([], tmp_path)
    assert json.loads(capsys.readouterr().out) == [
        "vit-layers-flax",
        "cait-flax",
        "t2t-vit-flax",
        "vision-transformer-flax",
    ]


@pytest.mark.parametrize(
    "name",
    ["Cait-flax", "cait_flax", "-cait", "cait flax", "cait$(id)", "cait;rm", "cait-flax.", "vit-layers-flax"],
)
def test_a_folder_with_an_invalid_name_is_refused(tmp_path, capsys, name):
    make_tree(tmp_path, "cait-flax", name)
    with pytest.raises(SystemExit, match=r"^error: packages/"):
        changed_packages.main([], tmp_path)
    assert capsys.readouterr().out == ""  # nothing reaches $GITHUB_OUTPUT


def test_validated_refuses_what_is_not_a_distribution(tmp_path):
    dists = changed_packages.distributions(make_tree(tmp_path, "cait-flax"))
    assert changed_packages.validated(["vit-layers-flax", "cait-flax"], dists) == [
        "vit-layers-flax",
        "cait-flax",
    ]
    for name in ["pit-flax", "shared", "cait-flax)", "", 'x", "y']:
        with pytest.raises(changed_packages.InvalidDistribution, match="not a distribution"):
            changed_packages.validated([name], dists)


def test_select_by_changed_paths(tmp_path):
    dists = changed_packages.distributions(make_tree(tmp_path, "cait-flax", "pit-flax"))
    assert changed_packages.select(["packages/pit-flax/README.md"], dists) == ["pit-flax"]
    assert changed_packages.select(["packages/pit-flax-extra/x.py", "examples/train.py"], dists) == []
    for shared in ["shared/src/x.py", "noxfile.py", ".github/workflows/ci.yml", "pyproject.toml"]:
        assert changed_packages.select([shared], dists) == ["vit-layers-flax", "cait-flax", "pit-flax"]


def test_pull_request_output_is_validated(tmp_path, capsys, monkeypatch):
    make_tree(tmp_path, "cait-flax")
    monkeypatch.setattr(changed_packages, "changed_since", lambda base, root: ["packages/cait-flax/x.py"])
    changed_packages.main(["--base", "origin/main"], tmp_path)
    assert json.loads(capsys.readouterr().out) == ["cait-flax"]


def test_a_base_that_looks_like_an_option_is_refused(tmp_path):
    with pytest.raises(changed_packages.InvalidDistribution, match="not a git ref"):
        changed_packages.changed_since("--output=/tmp/x", tmp_path)
