"""Run the Python code blocks of a README exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"^```python(?P<tag>[^\n]*)\n(?P<code>.*?)^```", re.S | re.M)


def readme_python_blocks(path: str | Path, tag: str = "") -> list[str]:
    """The fenced Python blocks of a markdown file, in order.

    ``tag=""`` selects plain ```` ```python ```` blocks (runnable with the package's own
    dependencies); ``tag="torch"`` selects ```` ```python torch ```` blocks, which need
    torch and vit-pytorch.
    """
    text = Path(path).read_text(encoding="utf-8")
    return [m["code"] for m in _BLOCK.finditer(text) if m["tag"].strip() == tag]


def run_readme_usage(path: str | Path, tag: str = "") -> list[dict]:
    """Execute the selected Python blocks of ``path``, each in a fresh namespace.

    Returns the namespaces. Fails if there is no such block, so a README that lost its
    usage example fails instead of passing vacuously.
    """
    blocks = readme_python_blocks(path, tag)
    assert blocks, f"{path} has no ```python{' ' + tag if tag else ''} block"
    namespaces = []
    for i, code in enumerate(blocks):
        namespace: dict = {"__name__": "__readme__"}
        exec(compile(code, f"{path}[python{tag} block {i}]", "exec"), namespace)
        namespaces.append(namespace)
    return namespaces
