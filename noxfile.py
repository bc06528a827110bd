"""Build and test every vit-flax distribution.

Sessions (``nox -l`` lists them all; plain ``nox`` runs the CPU check that CI runs, ``-t ci``):

* ``lint``                       ruff lint and format check over the repository
* ``suite``                      every distribution's tests, parity with vit-pytorch and the
                                 training program's tests, in one environment (CI)
* ``build(<dist>)``              hatch builds wheel and sdist (LICENSE in both); the wheel is
                                 installed alone into a clean environment, a model's together
                                 with ``vit-layers-flax`` built at exactly its declared lower
                                 bound (from git history), where every module imports and the
                                 README usage runs (CI)
* ``tests(<dist>-<backend>)``    a distribution's JAX tests on ``cpu``, ``cuda`` or ``tpu``;
                                 ``JAX_PLATFORMS`` is set, so a missing accelerator fails
                                 (accelerators only when named or by tag: ``-t cuda``)
* ``parity(<dist>)``             a distribution's tests against its references (vit-pytorch, timm;
                                 torch, CPU)
* ``pretrained_parity``          every pretrained preset against timm at its full size (the CI
                                 suite runs the tiny and small ones)
* ``min_versions(<dist>)``       the JAX tests against the oldest declared jax/flax
* ``demo``                       the main job: examples/train.py trains the default architecture
* ``examples``                   the training program's tests
* ``bench(<backend>)``           every architecture against vit-pytorch (``benchmarks/``)

The references run on ``torch==2.14.1`` with ``torchvision==0.29.1`` (timm imports it) and
``timm==1.0.29``. uv does not read pip's configuration, so where pip is configured with
``find-links`` folders or local (``file://``) indexes, uv is pointed at the folders holding
their files (a machine's copies of the large torch wheels). Set ``UV_FIND_LINKS`` or
``UV_INDEX`` yourself to choose another source.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
SHARED = "vit-layers-flax"

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
#: plain ``nox`` runs what CI runs, all of it on the CPU; accelerator sessions only when named
nox.options.tags = ["ci"]

TORCH = "torch==2.14.1"
#: timm's requirement (its layers import torchvision), at the release built for TORCH
TORCHVISION = "torchvision==0.29.1"
REFERENCE = "vit-pytorch==1.26.11"
#: the reference of the pretrained presets (their architectures and weight layouts)
TIMM = "timm==1.0.29"
#: the reference of CvT's pretrained presets (Hugging Face's ``CvtForImageClassification``)
TRANSFORMERS = "transformers==5.18.0"
#: the oldest versions the distributions declare (keep in step with their pyproject.toml)
MIN_VERSIONS = [
    "jax==0.4.36",
    "jaxlib==0.4.36",
    "flax==0.10.2",
    "einops==0.8.0",
    "numpy==1.26.4",
    "optax==0.2.3",  # the contract suite's (the ``testing`` extra)
]

#: the test runner. pytest 9.2 breaks pytest-xdist 3.8's ``--dist loadgroup`` (every test is
#: scheduled alone, so both workers compile the same model case); 9.1 keeps the groups.
PYTEST = ["pytest>=8,<9.2", "pytest-xdist>=3"]

#: pytest-xdist on the CPU: a test file's time is mostly XLA compiles, which run on one
#: thread each, so one worker per core (up to four) runs the model cases side by side. The
#: contract suite groups each case's tests (``--dist loadgroup``), so a model compiles once.
CPU_WORKERS = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadgroup"]

#: one persistent XLA compilation cache for the test sessions of a run: a program compiled in
#: ``suite`` (a README usage, say) is loaded, not compiled again, by ``build``'s run of the same
#: README against the wheels. Not for ``bench``, which times compilation, nor ``demo``.
XLA_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".nox" / "xla-cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
}

#: The tests compile a thousand small programs and run each once or twice on tiny inputs, so
#: on the CPU their time is XLA's compilation, most of it LLVM optimising machine code. They
#: ask for unoptimised machine code (the same HLO optimisations and floating-point
#: semantics; matrix products still call the same library kernels). Users' programs,
#: ``demo`` and ``bench`` keep XLA's default.
CPU_TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def _jax_env(platform: str = "cpu", **extra: str) -> dict[str, str]:
    """The environment of a test session's JAX processes."""
    env = {"JAX_PLATFORMS": platform, **XLA_CACHE, **extra}
    if platform == "cpu":
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_TEST_XLA_FLAGS}".strip()
    return env


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
    """``UV_FIND_LINKS`` from pip's configuration, unless uv is already configured: pip's
    ``find-links`` folders, and the folders holding the files of its local (``file://``)
    indexes."""
    if os.environ.get("UV_FIND_LINKS") or os.environ.get("UV_INDEX"):
        return {}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return {}
    links = set()
    for key, value in re.findall(r"(find-links|index-url)='([^']+)'", out):
        for entry in value.split():
            if key == "find-links":
                links.add(entry)
            elif entry.startswith("file://") and (index := Path(entry.removeprefix("file://"))).is_dir():
                for page in index.glob("*/index.html"):
                    hrefs = re.findall(r'href="([^"#]+)', page.read_text(encoding="utf-8"))
                    links.update(str((page.parent / h).resolve().parent) for h in hrefs)
    return {"UV_FIND_LINKS": ",".join(sorted(links))} if links else {}


def _install_dist(session: nox.Session, dist: str, *extra: str, **kwargs) -> None:
    """Install a distribution from source with the shared package and pytest."""
    session.install(f"{ROOT / 'shared'}[safetensors,testing]", str(DISTS[dist]), *PYTEST, *extra, **kwargs)


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
    [nox.param(d, b, id=f"{d}-{b}", tags=[b]) for d in DISTS for b in BACKENDS],
)
def tests(session: nox.Session, dist: str, backend: str) -> None:
    """A distribution's JAX tests (everything but parity) on one backend."""
    jax_requirement, platform = BACKENDS[backend]
    _install_dist(session, dist, jax_requirement)
    _pytest(session, _tests_dir(dist), "-m", "not parity", platform=platform)


@nox.session
@nox.parametrize("dist", [nox.param(d, id=d) for d in DISTS])
def parity(session: nox.Session, dist: str) -> None:
    """The tests against the references, vit-pytorch and timm (float32, CPU)."""
    env = _pip_find_links()
    _install_dist(session, dist, TORCH, TORCHVISION, TIMM, TRANSFORMERS, "einops", env=env)
    _install_reference(session, env)
    _pytest(session, _tests_dir(dist), "-m", "parity")


@nox.session(tags=["ci"])
def suite(session: nox.Session) -> None:
    """Every distribution's tests and parity with vit-pytorch, and the training program's
    and the benchmark runner's tests: one environment, one pytest run whose workers share
    the cores. Each distribution alone is what ``build`` checks."""
    env = _pip_find_links()
    session.install(
        f"{ROOT / 'shared'}[safetensors,testing]",
        *(str(DISTS[d]) for d in MODELS),
        "-r",
        str(ROOT / "examples" / "requirements.txt"),
        *PYTEST,
        TORCH,
        TORCHVISION,
        TIMM,
        TRANSFORMERS,
        "einops",
        env=env,
    )
    _install_reference(session, env)
    tests = [_tests_dir(d) for d in DISTS] + [
        str(ROOT / "examples" / "tests"),
        str(ROOT / "benchmarks" / "tests"),
        str(ROOT / ".github" / "scripts"),
    ]
    _pytest(session, *tests, "--durations=25")


@nox.session
def pretrained_parity(session: nox.Session) -> None:
    """Every pretrained preset of every distribution against timm (CvT: transformers), at its full size and input
    size (the suite runs the tiny and small ones); minutes per large preset on a CPU."""
    env = _pip_find_links()
    session.install(
        f"{ROOT / 'shared'}[safetensors,testing]",
        *(str(DISTS[d]) for d in MODELS),
        *PYTEST,
        TORCH,
        TORCHVISION,
        TIMM,
        TRANSFORMERS,
        env=env,
    )
    tests = sorted(str(p) for d in DISTS for p in (DISTS[d] / "tests").glob("test_*pretrained.py"))
    session.env["VIT_FLAX_ALL_PRESETS"] = "1"
    _pytest(session, *tests, "-m", "parity", "--durations=30")


def _install_reference(session: nox.Session, env: dict[str, str]) -> None:
    # vit-pytorch's own requirements are installed besides it (torch, torchvision, einops):
    # install it alone, so that they stay the pinned ones.
    session.install("--no-deps", REFERENCE, env=env)


def _pytest(session: nox.Session, *args: str, platform: str = "cpu") -> None:
    """The one pytest invocation of every test session: on the CPU one worker per core (up
    to four; one process owns an accelerator), the session's arguments last, then each
    parity case's relative error in the log."""
    report = Path(session.create_tmp()).resolve() / "parity.jsonl"
    report.unlink(missing_ok=True)
    session.run(
        "pytest",
        *args,
        "-p",
        "no:cacheprovider",
        *(CPU_WORKERS if platform == "cpu" else []),
        *session.posargs,
        env=_jax_env(platform, VIT_FLAX_PARITY_REPORT=str(report)),
    )
    if report.exists():
        for line in report.read_text().splitlines():
            record = json.loads(line)
            session.log(f"parity {record['case']}: relative error {record['relative_error']:.2e}")


#: the README runner of the contract suite, embedded as source in ``build``'s check script
#: (the wheel is installed without the ``testing`` extra, so it cannot be imported there)
README_RUNNER = ROOT / "shared" / "src" / "vit_layers_flax" / "testing" / "readme.py"


@nox.session(tags=["ci"])
@nox.parametrize("dist", [nox.param(d, id=d) for d in DISTS])
def build(session: nox.Session, dist: str) -> None:
    """hatchling builds the wheel and sdist, each with the LICENSE; the wheel alone, with
    only its declared dependencies, installs into a clean environment, where every module
    imports. A model's wheel is installed with ``vit-layers-flax`` built as it was at its
    declared lower bound (the commit where the shared version first became that bound), and
    its README usage runs there: a model that uses newer shared API than its bound fails."""
    session.install("hatchling>=1.27")
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
    _check_license(session, wheels[0], sdists[0])
    local: list[str] = []
    if dist != SHARED:  # the model's one local dependency, at its declared lower bound
        floor = _shared_floor(session, dist)
        commit = _shared_commit(session, floor)
        session.log(f"{dist}: {SHARED} {floor}, as at commit {commit[:12]}")
        with tempfile.TemporaryDirectory() as old:
            archive = subprocess.run(
                ["git", "archive", "--format=tar", commit, "shared"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(old, filter="data")
            with session.chdir(Path(old) / "shared"):
                session.run(
                    "python", "-m", "hatchling", "build", "-t", "wheel", "--directory", str(shared_out)
                )
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
            "import vit_layers_flax\n"
            "print(package.__name__, package.__version__, 'imports from its wheel with vit-layers-flax',"
            " vit_layers_flax.__version__)\n"
        )
        # and, for a model, its README usage, in the same process
        script = Path(clean) / "check.py"
        runner, usage = "", ""
        if dist != SHARED:  # (the runner's source first: it starts with a __future__ import)
            runner = README_RUNNER.read_text(encoding="utf-8") + "\n"
            usage = f"run_readme_usage({str(DISTS[dist] / 'README.md')!r})\n"
        script.write_text(runner + check + usage, encoding="utf-8")
        with session.chdir(clean):
            session.run(str(python), "-I", str(script), external=True, env=_jax_env())


def _check_license(session: nox.Session, wheel: Path, sdist: Path) -> None:
    """The repository's LICENSE, byte for byte, in the wheel (``License-File`` metadata) and
    at the root of the sdist."""
    license_text = (ROOT / "LICENSE").read_bytes()
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        if len(licenses) != 1 or whl.read(licenses[0]) != license_text:
            session.error(
                f"{wheel.name}: expected the repository's LICENSE in .dist-info/licenses/, found {licenses}"
            )
        if "License-File: LICENSE" not in whl.read(metadata).decode():
            session.error(f"{wheel.name}: METADATA has no 'License-File: LICENSE'")
    with tarfile.open(sdist) as tar:
        root = sdist.name.removesuffix(".tar.gz")
        member = tar.extractfile(f"{root}/LICENSE") if f"{root}/LICENSE" in tar.getnames() else None
        if member is None or member.read() != license_text:
            session.error(f"{sdist.name}: expected the repository's LICENSE at {root}/LICENSE")
    session.log(f"LICENSE in {wheel.name} and {sdist.name}")


def _shared_floor(session: nox.Session, dist: str) -> str:
    """The lower bound a model declares on the shared package (``vit-layers-flax>=X``)."""
    requirements = nox.project.load_toml(DISTS[dist] / "pyproject.toml")["project"]["dependencies"]
    floors = [m.group(1) for r in requirements if (m := re.fullmatch(rf"{SHARED}\s*>=\s*([^,\s]+).*", r))]
    if len(floors) != 1:
        session.error(f"{dist}: expected one '{SHARED}>=X' requirement, found {requirements}")
    return floors[0]


def _shared_commit(session: nox.Session, version: str) -> str:
    """The first commit (oldest first) at which ``shared/pyproject.toml`` says ``version``."""
    shallow = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    if shallow == "true":
        session.error("the shared-floor check reads git history: clone with full history (fetch-depth: 0)")
    commits = subprocess.run(
        ["git", "log", "--reverse", "--format=%H", "--", "shared/pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for commit in commits:
        text = subprocess.run(
            ["git", "show", f"{commit}:shared/pyproject.toml"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
        if found and found.group(1) == version:
            return commit
    session.error(f"no commit has {SHARED} {version} in shared/pyproject.toml: commit the version first")
    raise AssertionError  # session.error raises


def _module_name(dist: str) -> str:
    """``cait-flax`` -> ``cait_flax``: the import name (each package's ``src/<module>``)."""
    (module,) = [p.name for p in (DISTS[dist] / "src").iterdir() if p.is_dir() and p.name.isidentifier()]
    return module


@nox.session
@nox.parametrize("dist", [nox.param(d, id=d) for d in DISTS])
def min_versions(session: nox.Session, dist: str) -> None:
    """The JAX tests against the oldest jax/flax/einops/numpy the distributions declare."""
    _install_dist(session, dist)
    session.install(*MIN_VERSIONS)
    session.run("python", "-c", "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__)")
    _pytest(session, _tests_dir(dist), "-m", "not parity")


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


@nox.session
def examples(session: nox.Session) -> None:
    """The training program's tests (data, one step per architecture, checkpoints, resume,
    eight simulated devices, fine-tuning a pretrained preset from a timm checkpoint) and the
    benchmark runner's (every configuration builds; the JAX side runs and writes its JSON
    and table)."""
    _install_examples(session, *PYTEST, TORCH, TORCHVISION, TIMM, env=_pip_find_links())
    _pytest(session, str(ROOT / "examples" / "tests"), str(ROOT / "benchmarks" / "tests"))


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
