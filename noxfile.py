"""Build and test every vit-flax distribution.

Sessions (``nox -l`` lists them all; ``nox -t ci`` is the full CPU check):

* ``lint``                       ruff lint and format check over the repository
* ``tests(<dist>-<backend>)``    a distribution's JAX tests on ``cpu``, ``cuda`` or ``tpu``;
                                 ``JAX_PLATFORMS`` is set, so a missing accelerator fails
* ``parity(<dist>)``             the tests against vit-pytorch (torch, CPU)
* ``build(<dist>)``              hatch builds wheel and sdist; the wheel is installed alone
                                 into a clean environment, where all its modules import
* ``min_versions(<dist>)``       the JAX tests against the oldest declared jax/flax
* ``demo``                       the main job: examples/train.py trains the default architecture
* ``examples``                   the training program's tests
* ``usage``                      every package's README usage example, all packages together
* ``bench(<backend>)``           every architecture against vit-pytorch (``benchmarks/``)

The torch used by ``parity`` is ``torch==2.13.0``; where pip is configured with a
``find-links`` folder (a CPU build of torch), uv is pointed at it too, because uv does not
read pip's configuration. Set ``UV_FIND_LINKS`` or ``UV_INDEX`` yourself to choose another
source (e.g. ``UV_INDEX=https://download.pytorch.org/whl/cpu``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
SHARED = "vit-layers-flax"

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tests", "parity", "build"]

TORCH = "torch==2.13.0"
REFERENCE = "vit-pytorch==1.26.11"
#: the oldest versions the distributions declare (keep in step with their pyproject.toml)
MIN_VERSIONS = ["jax==0.4.36", "jaxlib==0.4.36", "flax==0.10.2", "einops==0.8.0", "numpy==1.26.4"]

#: pytest-xdist on the CPU: a test file's time is mostly XLA compiles, which run on one
#: thread each, so one worker per core (up to four) runs the model cases side by side. The
#: contract suite groups each case's tests (``--dist loadgroup``), so a model compiles once.
CPU_WORKERS = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadgroup"]

#: backend -> (jax requirement, JAX_PLATFORMS value)
BACKENDS = {
    "cpu": ("jax", "cpu"),
    "cuda": ("jax[cuda12]", "cuda"),
    "tpu": ("jax[tpu]", "tpu"),
}


def _discover() -> dict[str, Path]:
    """Distribution name -> directory: the shared package, then packages/* in order."""
    dists = {SHARED: ROOT / "shared"}
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        dists[pyproject.parent.name] = pyproject.parent
    return dists


DISTS = _discover()
MODELS = [d for d in DISTS if d != SHARED]


def _pip_find_links() -> dict[str, str]:
    """``UV_FIND_LINKS`` from pip's configuration, unless uv is already configured."""
    if os.environ.get("UV_FIND_LINKS") or os.environ.get("UV_INDEX"):
        return {}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return {}
    match = re.search(r"find-links='([^']+)'", out)
    return {"UV_FIND_LINKS": match.group(1)} if match else {}


def _install_dist(session: nox.Session, dist: str, *extra: str, **kwargs) -> None:
    """Install a distribution from source with the shared package and pytest."""
    session.install(
        f"{ROOT / 'shared'}[safetensors]", str(DISTS[dist]), "pytest>=8", "pytest-xdist>=3", *extra, **kwargs
    )


def _tests_dir(dist: str) -> str:
    return str(DISTS[dist] / "tests")


@nox.session(tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@nox.parametrize(
    "dist, backend",
    [nox.param(d, b, id=f"{d}-{b}", tags=["ci"] if b == "cpu" else [b]) for d in DISTS for b in BACKENDS],
)
def tests(session: nox.Session, dist: str, backend: str) -> None:
    """A distribution's JAX tests (everything but parity) on one backend."""
    jax_requirement, platform = BACKENDS[backend]
    _install_dist(session, dist, jax_requirement)
    session.run(
        "pytest",
        _tests_dir(dist),
        "-m",
        "not parity",
        "-p",
        "no:cacheprovider",
        # one process owns an accelerator; CPU tests run on every core
        *(CPU_WORKERS if backend == "cpu" else []),
        *session.posargs,
        env={"JAX_PLATFORMS": platform},
    )


@nox.session(tags=["ci"])
@nox.parametrize("dist", [nox.param(d, id=d) for d in DISTS])
def parity(session: nox.Session, dist: str) -> None:
    """The tests against vit-pytorch (float32, CPU)."""
    env = _pip_find_links()
    _install_dist(session, dist, TORCH, "einops", env=env)
    # vit-pytorch's own requirements pull torchvision, which the model files do not need
    # (and whose wheels bring a CUDA torch): install it alone.
    session.install("--no-deps", REFERENCE, env=env)
    report = Path(session.create_tmp()).resolve() / "parity.jsonl"
    report.unlink(missing_ok=True)
    session.run(
        "pytest",
        _tests_dir(dist),
        "-m",
        "parity",
        "-p",
        "no:cacheprovider",
        *CPU_WORKERS,
        *session.posargs,
        env={"JAX_PLATFORMS": "cpu", "VIT_FLAX_PARITY_REPORT": str(report)},
    )
    if report.exists():
        records = [json.loads(line) for line in report.read_text().splitlines()]
        for record in records:
            session.log(f"parity {record['case']}: relative error {record['relative_error']:.2e}")


def _usage_script(readme: Path) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", readme.read_text(encoding="utf-8"), re.S | re.M)
    if not blocks:
        raise RuntimeError(f"{readme} has no ```python usage block")
    return "\n".join(
        f"exec(compile({b!r}, {str(readme)!r}, 'exec'), {{'__name__': '__readme__'}})" for b in blocks
    )


@nox.session(tags=["ci"])
@nox.parametrize("dist", [nox.param(d, id=d) for d in DISTS])
def build(session: nox.Session, dist: str) -> None:
    """hatchling builds the wheel and sdist; the wheel alone, with only its declared
    dependencies, installs into a clean environment and imports there."""
    session.install("hatchling>=1.26")
    out = Path(session.create_tmp()).resolve() / "dist"
    shared_out = out / "shared"
    for path in (out, shared_out):
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.*"):
            old.unlink()
    # hatch's build backend, run in this session's environment (what `hatch build` runs
    # inside an environment of its own)
    with session.chdir(DISTS[dist]):
        session.run("python", "-m", "hatchling", "build", "--directory", str(out))
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist, built {wheels + sdists}")
    local: list[str] = []
    if dist != SHARED:  # the model's one local dependency, as the wheel users get from PyPI
        with session.chdir(DISTS[SHARED]):
            session.run("python", "-m", "hatchling", "build", "-t", "wheel", "--directory", str(shared_out))
        local = [str(w) for w in shared_out.glob("*.whl")]
    module = _module_name(dist)

    with tempfile.TemporaryDirectory() as clean:
        env_dir = Path(clean) / "env"
        python = env_dir / "bin" / "python"
        session.run("uv", "venv", "--quiet", "--python", sys.executable, str(env_dir), external=True)
        # the freshly built wheels by path, and never a cached build of the same version
        session.run(
            "uv",
            "pip",
            "install",
            "--quiet",
            "--refresh-package",
            SHARED,
            "--python",
            str(python),
            str(wheels[0]),
            *local,
            external=True,
        )
        # every module of the package, from the wheel (run from the temporary folder, so
        # that nothing from the source tree is importable)
        check = (
            "import importlib, pkgutil\n"
            f"package = importlib.import_module({module!r})\n"
            "for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
            "    if not info.name.endswith('.testing') and '.testing.' not in info.name:\n"
            "        importlib.import_module(info.name)\n"
            "print(package.__name__, package.__version__, 'imports from its wheel')\n"
        )
        with session.chdir(clean):
            session.run(str(python), "-I", "-c", check, external=True, env={"JAX_PLATFORMS": "cpu"})


def _module_name(dist: str) -> str:
    """``vit-flax`` -> ``vit_flax``: the import name (each package's ``src/<module>``)."""
    (module,) = [p.name for p in (DISTS[dist] / "src").iterdir() if p.is_dir() and p.name.isidentifier()]
    return module


@nox.session
@nox.parametrize("dist", [nox.param(d, id=d) for d in DISTS])
def min_versions(session: nox.Session, dist: str) -> None:
    """The JAX tests against the oldest jax/flax/einops/numpy the distributions declare."""
    _install_dist(session, dist)
    session.install(*MIN_VERSIONS)
    session.run("python", "-c", "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__)")
    session.run(
        "pytest",
        _tests_dir(dist),
        "-m",
        "not parity",
        "-p",
        "no:cacheprovider",
        *CPU_WORKERS,
        *session.posargs,
        env={"JAX_PLATFORMS": "cpu"},
    )


def _install_examples(session: nox.Session, *extra: str, **kwargs) -> None:
    """Every distribution from source plus what ``examples/train.py`` needs."""
    session.install(
        *(str(path) for path in DISTS.values()),
        "-r",
        str(ROOT / "examples" / "requirements.txt"),
        *extra,
        **kwargs,
    )


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: train the default architecture on digits (``nox -s demo -- --arch cvt``)."""
    _install_examples(session)
    session.run("python", str(ROOT / "examples" / "train.py"), *session.posargs)


@nox.session(tags=["ci"])
def examples(session: nox.Session) -> None:
    """The training program's tests (data, one step per architecture, checkpoints, resume,
    eight simulated devices) and the benchmark runner's (every configuration builds; the
    JAX side runs and writes its JSON and table)."""
    _install_examples(session, "pytest>=8", "pytest-xdist>=3")
    session.run(
        "pytest",
        str(ROOT / "examples" / "tests"),
        str(ROOT / "benchmarks" / "tests"),
        "-p",
        "no:cacheprovider",
        "-n",
        "auto",
        "--maxprocesses",
        "4",
        *session.posargs,
        env={"JAX_PLATFORMS": "cpu"},
    )


@nox.session
@nox.parametrize("backend", [nox.param(b, id=b) for b in ("cpu", "cuda")])
def bench(session: nox.Session, backend: str) -> None:
    """Every architecture against vit-pytorch, eager and under torch.compile: throughput,
    compile time, FLOPs (``nox -s "bench(cpu)" -- --arch vit simple-vit --configs small``;
    ``python benchmarks/bench.py --help`` lists the options)."""
    env = _pip_find_links() if backend == "cpu" else {}
    _install_examples(session, BACKENDS[backend][0], TORCH, env=env)
    session.install("--no-deps", REFERENCE, env=env)
    session.run(
        "python",
        str(ROOT / "benchmarks" / "bench.py"),
        *session.posargs,
        env={"JAX_PLATFORMS": BACKENDS[backend][1]},
    )


@nox.session
def usage(session: nox.Session) -> None:
    """Every package's README usage example, with all packages installed together."""
    session.install(*(str(path) for path in DISTS.values()))
    for dist in MODELS:
        session.log(f"{dist}: README usage")
        with tempfile.TemporaryDirectory() as clean:
            script = Path(clean) / "usage.py"
            script.write_text(_usage_script(DISTS[dist] / "README.md"), encoding="utf-8")
            session.run("python", str(script), env={"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")})
