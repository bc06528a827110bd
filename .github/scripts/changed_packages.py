"""Print the JSON list of distributions CI should test.

Every distribution (the shared package, then packages/*) unless a base ref is given; with
``--base REF`` only those whose folder changed since REF, or all of them when a change
touches what every package depends on (shared/, the noxfile, CI, the workspace config).

The names go into job matrices and nox session names, so each is checked first: only
``vit-layers-flax`` (``shared/``) and the names of ``packages/*/`` folders that hold a
pyproject.toml, each matching ``^[a-z0-9][a-z0-9-]*$``. Anything else stops the script
with an error instead of reaching a workflow.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = "vit-layers-flax"
EVERYTHING = ("shared/", "noxfile.py", ".github/", ".ci/", "pyproject.toml")
NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class InvalidDistribution(Exception):
    """A name that is not one of this repository's distributions."""


def distributions(root: Path = ROOT) -> dict[str, str]:
    """Distribution name -> folder (with a trailing slash), every name validated."""
    dists = {SHARED: "shared/"}
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        name = pyproject.parent.name
        if not NAME.fullmatch(name):
            raise InvalidDistribution(
                f"packages/{name}/: a distribution folder's name must match ^[a-z0-9][a-z0-9-]*$ "
                "(lower-case letters, digits and '-')"
            )
        if name == SHARED:
            raise InvalidDistribution(f"packages/{name}/: {SHARED} is the shared package, in shared/")
        dists[name] = f"packages/{name}/"
    return dists


def validated(names: list[str], dists: dict[str, str]) -> list[str]:
    """``names`` unchanged if each is a distribution of ``dists``; ``InvalidDistribution``
    otherwise."""
    for name in names:
        if not isinstance(name, str) or not NAME.fullmatch(name) or name not in dists:
            raise InvalidDistribution(f"{name!r} is not a distribution of this repository")
    return names


def select(changed: list[str], dists: dict[str, str]) -> list[str]:
    """The distributions that the changed paths touch (all of them for shared files)."""
    if any(path.startswith(EVERYTHING) for path in changed):
        return list(dists)
    return [name for name, folder in dists.items() if any(p.startswith(folder) for p in changed)]


def changed_since(base: str, root: Path = ROOT) -> list[str]:
    if base.startswith("-"):
        raise InvalidDistribution(f"--base {base!r}: not a git ref")
    return subprocess.run(
        ["git", "diff", "--name-only", f"{base}...HEAD", "--"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()


def main(argv: list[str] | None = None, root: Path = ROOT) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", help="git ref to diff against (pull requests)")
    args = parser.parse_args(argv)
    try:
        dists = distributions(root)
        names = select(changed_since(args.base, root), dists) if args.base else list(dists)
        print(json.dumps(validated(names, dists)))
    except InvalidDistribution as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
