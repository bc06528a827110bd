"""check_tag.py on small repositories written into tmp_path (pure Python, no git)."""

from __future__ import annotations

from pathlib import Path

import check_tag
import pytest

RELEASED = """# Changelog

## Unreleased

## 0.2.0 - 2026-12-01

### Added
- Something.

## 0.1.0 - 2026-11-22

### Added
- The first things.
"""


def make_dist(root: Path, dist: str, version: str, changelog: str) -> Path:
    folder = root / "shared" if dist == check_tag.SHARED else root / "packages" / dist
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{dist}"\nversion = "{version}"\n')
    (folder / "CHANGELOG.md").write_text(changelog)
    return folder


def test_a_matching_tag_prints_the_folder(tmp_path, capsys):
    make_dist(tmp_path, "vision-transformer-flax", "0.2.0", RELEASED)
    assert check_tag.check("vision-transformer-flax-v0.2.0", tmp_path) == Path(
        "packages/vision-transformer-flax"
    )
    check_tag.main(["vision-transformer-flax-v0.2.0"], tmp_path)
    assert capsys.readouterr().out == "packages/vision-transformer-flax\n"


def test_the_shared_package_lives_in_shared(tmp_path):
    make_dist(tmp_path, "vit-layers-flax", "0.2.0", RELEASED)
    assert check_tag.check("vit-layers-flax-v0.2.0", tmp_path) == Path("shared")


def test_a_heading_without_date_passes(tmp_path):
    make_dist(tmp_path, "cait-flax", "0.2.0", "# Changelog\n\n## 0.2.0\n\n- Something.\n")
    assert check_tag.check("cait-flax-v0.2.0", tmp_path) == Path("packages/cait-flax")


@pytest.mark.parametrize(
    "tag, message",
    [
        ("cait-flax-0.2.0", "not of the form"),
        ("Cait-flax-v0.2.0", "not of the form"),
        ("../x-v0.2.0", "not of the form"),
        ("pit-flax-v0.2.0", "no distribution 'pit-flax'"),
        ("cait-flax-v0.2.1", "does not match packages/cait-flax/pyproject.toml"),
    ],
)
def test_a_tag_that_names_no_release_is_refused(tmp_path, tag, message):
    make_dist(tmp_path, "cait-flax", "0.2.0", RELEASED)
    with pytest.raises(check_tag.ReleaseError, match=message):
        check_tag.check(tag, tmp_path)


def test_the_pyproject_name_must_be_the_distribution(tmp_path):
    folder = make_dist(tmp_path, "cait-flax", "0.2.0", RELEASED)
    (folder / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "0.2.0"\n')
    with pytest.raises(check_tag.ReleaseError, match=r"says other 0\.2\.0"):
        check_tag.check("cait-flax-v0.2.0", tmp_path)


@pytest.mark.parametrize(
    "changelog",
    [
        "## 0.1.10 - 2026-12-01\n",  # a longer version that starts with 0.1.1
        "## 0.1.1.post1\n",
        "## 0.1.1-rc1\n",
        "## 0.1.1 - soon\n",
        "### 0.1.1\n",
        " ## 0.1.1\n",
        "The bug fixed in ## 0.1.1 is described below.\n",
        "- Fixed in 0.1.1.\n",
        "## Unreleased\n\nThis is what 0.1.1 will contain.\n",
    ],
)
def test_only_an_exact_heading_line_counts(tmp_path, changelog):
    make_dist(tmp_path, "cait-flax", "0.1.1", "# Changelog\n\n" + changelog)
    with pytest.raises(check_tag.ReleaseError, match=r"no heading line '## 0\.1\.1'"):
        check_tag.check("cait-flax-v0.1.1", tmp_path)


def test_two_headings_for_one_version_are_refused(tmp_path):
    make_dist(tmp_path, "cait-flax", "0.1.1", "## 0.1.1 - 2026-12-01\n\n## 0.1.1\n")
    with pytest.raises(check_tag.ReleaseError, match=r"2 headings for 0\.1\.1"):
        check_tag.check("cait-flax-v0.1.1", tmp_path)


@pytest.mark.parametrize("bullet", ["- Added `Dense`.", "* Added `Dense`.", "+ Added `Dense`.", "  - nested"])
def test_entries_left_under_unreleased_are_refused(tmp_path, bullet):
    changelog = f"# Changelog\n\n## Unreleased\n\n### Added\n{bullet}\n\n## 0.2.0 - 2026-12-01\n\n- Old.\n"
    make_dist(tmp_path, "cait-flax", "0.2.0", changelog)
    with pytest.raises(check_tag.ReleaseError, match=r"Unreleased' section .* still lists 1 entry"):
        check_tag.check("cait-flax-v0.2.0", tmp_path)


def test_an_unreleased_section_with_only_prose_or_empty_bullets_passes(tmp_path):
    changelog = (
        "# Changelog\n\n## Unreleased\n\nNothing yet.\n\n### Added\n-\n\n"
        "## 0.2.0 - 2026-12-01\n\n### Added\n- Released things are not unreleased entries.\n"
    )
    make_dist(tmp_path, "cait-flax", "0.2.0", changelog)
    assert check_tag.check("cait-flax-v0.2.0", tmp_path) == Path("packages/cait-flax")


def test_the_unreleased_section_ends_at_the_next_level_two_heading():
    changelog = "## [Unreleased]\n### Fixed\n- a\n- b\n## 0.2.0\n- c\n## Unreleased notes\n- d\n"
    assert check_tag.unreleased_entries(changelog) == ["- a", "- b"]


def test_the_command_line_exits_with_the_reason(tmp_path):
    make_dist(tmp_path, "cait-flax", "0.2.0", "## Unreleased\n- pending\n\n## 0.2.0\n")
    with pytest.raises(SystemExit, match=r"^error: tag 'cait-flax-v0\.2\.0': the '## Unreleased'"):
        check_tag.main(["cait-flax-v0.2.0"], tmp_path)
    with pytest.raises(SystemExit, match="usage"):
        check_tag.main([], tmp_path)
