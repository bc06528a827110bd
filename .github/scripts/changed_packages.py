"""Print the JSON list of distributions CI should test.

Every distribution (the shared package, then packages/*) unless a base ref is given; with
``--base REF`` only those whose folder changed since REF, or all of them when a change
touches what every package depends on (shared/, the noxfile, CI, the workspace config).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = ("shared/", "noxfile.py", ".github/", ".ci/", "pyproject.toml")


def distributions() -> dict[str, str]:
    dists = {"vit-layers-flax": "shared/"}
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        dists[pyproject.parent.name] = f"packages/{pyproject.parent.name}/"
    return dists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", help="git ref to diff against (pull requests)")
    args = parser.parse_args()
    dists = distributions()
    if not args.base:
        print(json.dumps(list(dists)))
        return
    changed = subprocess.run(
        ["git", "diff", "--name-only", f"{args.base}...HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if any(path.startswith(EVERYTHING) for path in changed):
        print(json.dumps(list(dists)))
        return
    print(json.dumps([name for name, folder in dists.items() if any(p.startswith(folder) for p in changed)]))


if __name__ == "__main__":
    main()
