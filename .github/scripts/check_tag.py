"""Check a release tag ``<dist>-v<version>`` against that distribution's pyproject.toml.

Prints the distribution's folder on success (for the release workflow); exits non-zero
with a message when the tag names no distribution or another version.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def main(tag: str) -> None:
    match = re.fullmatch(r"(?P<dist>[a-z0-9-]+)-v(?P<version>\d+\.\d+\.\d+(?:[a-z0-9.]+)?)", tag)
    if not match:
        sys.exit(f"tag {tag!r} is not of the form <dist>-v<version>")
    dist, version = match["dist"], match["version"]
    folder = ROOT / "shared" if dist == "vit-layers-flax" else ROOT / "packages" / dist
    pyproject = folder / "pyproject.toml"
    if not pyproject.exists():
        sys.exit(f"tag {tag!r}: no distribution {dist!r} in this repository")
    project = tomllib.loads(pyproject.read_text())["project"]
    if project["name"] != dist or project["version"] != version:
        sys.exit(
            f"tag {tag!r} does not match {pyproject.relative_to(ROOT)}: {project['name']} {project['version']}"
        )
    if f"## {version}" not in (folder / "CHANGELOG.md").read_text():
        sys.exit(f"tag {tag!r}: {folder.relative_to(ROOT)}/CHANGELOG.md has no '## {version}' entry")
    print(folder.relative_to(ROOT))


if __name__ == "__main__":
    main(sys.argv[1])
