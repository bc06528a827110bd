"""Check a release tag ``<dist>-v<version>`` against that distribution's files.

``python .github/scripts/check_tag.py <tag>`` prints the distribution's folder (for the
release workflow) when

* ``<dist>`` is a distribution of this repository (``vit-layers-flax`` is ``shared/``,
  anything else ``packages/<dist>/``) and its pyproject.toml says that name and
  ``version = "<version>"``;
* its CHANGELOG.md has exactly one heading line for the version, ``## <version>`` or
  ``## <version> - <YYYY-MM-DD>`` (``## 0.1.10`` is not a heading for 0.1.1, and the
  version inside a sentence is not a heading);
* its ``## Unreleased`` section, if there is one, lists no entries (bullet lines): they
  belong under the version's heading before the release.

Otherwise it exits non-zero with a message saying what to fix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
SHARED = "vit-layers-flax"

TAG = re.compile(r"(?P<dist>[a-z0-9][a-z0-9-]*)-v(?P<version>\d+\.\d+\.\d+(?:[a-z0-9.]+)?)")
#: a level-2 heading (``## x``), not ``###``
SECTION = re.compile(r"^##(?!#)\s*(?P<title>.*?)\s*$")
#: a list item with some text: ``- x``, ``* x``, ``+ x``
ENTRY = re.compile(r"^\s*[-*+]\s+\S")


class ReleaseError(Exception):
    """The tag cannot be released; the message says why."""


def folder_of(dist: str, root: Path = ROOT) -> Path:
    return root / "shared" if dist == SHARED else root / "packages" / dist


def version_headings(changelog: str, version: str) -> list[str]:
    """The lines that are exactly ``## <version>`` or ``## <version> - <YYYY-MM-DD>``."""
    heading = re.compile(rf"^## {re.escape(version)}(?: - \d{{4}}-\d{{2}}-\d{{2}})?[ \t]*$")
    return [line for line in changelog.splitlines() if heading.fullmatch(line)]


def unreleased_entries(changelog: str) -> list[str]:
    """The bullet lines of the ``## Unreleased`` section (up to the next ``## `` heading)."""
    entries: list[str] = []
    inside = False
    for line in changelog.splitlines():
        section = SECTION.match(line)
        if section:
            inside = section["title"].strip("[]").lower() == "unreleased"
            continue
        if inside and ENTRY.match(line):
            entries.append(line.strip())
    return entries


def check(tag: str, root: Path = ROOT) -> Path:
    """The distribution's folder, relative to ``root``; ``ReleaseError`` when the tag
    cannot be released."""
    match = TAG.fullmatch(tag)
    if not match:
        raise ReleaseError(f"tag {tag!r} is not of the form <dist>-v<version> (e.g. vit-layers-flax-v0.2.0)")
    dist, version = match["dist"], match["version"]
    folder = folder_of(dist, root)
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        raise ReleaseError(f"tag {tag!r}: no distribution {dist!r} in this repository")
    where = folder.relative_to(root)
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    if project.get("name") != dist or project.get("version") != version:
        raise ReleaseError(
            f"tag {tag!r} does not match {where}/pyproject.toml, which says "
            f"{project.get('name')} {project.get('version')}: bump `version` there (or fix the tag)"
        )
    changelog_path = folder / "CHANGELOG.md"
    if not changelog_path.is_file():
        raise ReleaseError(f"tag {tag!r}: {where}/CHANGELOG.md does not exist")
    changelog = changelog_path.read_text(encoding="utf-8")
    headings = version_headings(changelog, version)
    if not headings:
        raise ReleaseError(
            f"tag {tag!r}: {where}/CHANGELOG.md has no heading line '## {version}' or "
            f"'## {version} - <YYYY-MM-DD>'"
        )
    if len(headings) > 1:
        raise ReleaseError(f"tag {tag!r}: {where}/CHANGELOG.md has {len(headings)} headings for {version}")
    entries = unreleased_entries(changelog)
    if entries:
        listed = "\n".join(f"  {e}" for e in entries[:5]) + ("\n  ..." if len(entries) > 5 else "")
        raise ReleaseError(
            f"tag {tag!r}: the '## Unreleased' section of {where}/CHANGELOG.md still lists "
            f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}; move them under "
            f"'## {version} - <date>' first:\n{listed}"
        )
    return where


def main(argv: list[str] | None = None, root: Path = ROOT) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: check_tag.py <dist>-v<version>")
    try:
        print(check(args[0], root))
    except ReleaseError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
