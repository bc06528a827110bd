"""Train any vit-flax architecture end to end: data, optax, checkpoints, many devices.

    python examples/train.py                          # ViT on scikit-learn's digits
    python examples/train.py --arch cvt               # any of the 17 (see --help)
    python examples/train.py --arch deit_tiny_patch16_224 --pretrained hub   # fine-tune timm's weights
    python examples/train.py --arch vit_tiny_patch16_224 --pretrained model.safetensors
    python examples/train.py --data ~/flowers          # a folder with one subfolder per class
    python examples/train.py --resume                 # continue the newest run of --arch
    python examples/train.py --dtype bfloat16         # bfloat16 compute, float32 parameters

Each run gets its own folder, ``--workdir`` (default ``runs/<arch>-<date>-<time>``): every
epoch is checkpointed there with orbax (``checkpoints/<epochs done>``), evaluated on the
held-out split, and drawn into ``learning_curve.png``. ``--resume`` (with ``--workdir``, or
alone for the newest run of ``--arch``) restores the step, parameters, optimizer state and
history; data order and dropout keys are functions of (seed, epoch, step), so a resumed run
continues exactly as the uninterrupted one would have. The last line printed is
``test accuracy: 0.XXXX``.

Pretrained presets: ``--arch`` also takes any name of ``vit_layers_flax.list_models()``
(timm's names, ``vit_tiny_patch16_224``, ``deit_tiny_patch16_224`` ...; ``name.tag`` for other
weights). ``--pretrained hub`` fine-tunes from its published weights (downloaded once from the
Hugging Face Hub: the ``hub`` extra, ``pip install "vision-transformer-flax[hub]"``),
``--pretrained FILE`` from a ``.safetensors`` file (or a torch checkpoint) in timm's layout;
without ``--pretrained`` the preset trains from scratch. The classifier is a new one for the
data's classes, the images are resized to ``--image-size`` (default: a small size the model
takes, so that it runs on a CPU: two patches across for ViT, 32 for 16-pixel patches; a
position embedding is resampled to it), given three channels (gray images are repeated, as
for any RGB weights) and normalised with the weights' mean and std. The blocks are scanned
(``scan=True``: each stack compiled once). A resumed run restores its checkpoint and does
not read the weights again.

Devices: the step is jitted over a ``jax.sharding`` mesh of every device (the batch is
split along the ``data`` axis, parameters and optimizer state are replicated), so the same
command runs on one CPU, on a GPU, on eight simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) and on several hosts: start the
same command on every host with ``--distributed``, which calls
``jax.distributed.initialize()`` (coordinator, process count and id come from the
cluster's environment: SLURM, Open MPI, Cloud TPU, or ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``). Each host then feeds its own slice of every
global batch, and ``--workdir`` must be a folder all hosts share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from configs import DEFAULT, HUB, RECIPES, PresetRecipe, Recipe, get_recipe, preset_names
from data import DataError, Dataset, load_digits_dataset, load_folder_dataset

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

#: The PRNG of the dropout keys. ``"rbg"`` draws dropout's random bits with XLA's
#: ``RngBitGenerator``, one operation, where the default threefry hashes every element in
#: twenty rounds of integer arithmetic, so a dropout-heavy train step compiles faster (see
#: docs/benchmarks.md). Its bits may differ between backends and XLA versions; splits and
#: ``fold_in`` stay threefry's.
DROPOUT_PRNG = "rbg"


def dropout_key(seed: int) -> jax.Array:
    """The key :func:`train_step` folds the step into for dropout (a ``DROPOUT_PRNG`` key)."""
    return jax.random.key(seed, impl=DROPOUT_PRNG)


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run. Everything that shapes the result is here and saved beside the
    checkpoints; ``--resume`` refuses a configuration that differs from the saved one."""

    arch: str = DEFAULT
    data: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    seed: int = 0
    dtype: str = "float32"
    test_fraction: float = 0.2
    image_size: int | None = None
    pretrained: str | None = None  # a preset's weights: "hub" or a checkpoint's absolute path

    def resolved(self) -> Config:
        """The configuration with the architecture's recipe filling unset values; stops with a
        message for an unknown ``arch``, ``pretrained`` weights for a recipe, or an image size
        the preset cannot take."""
        recipe = get_recipe(self.arch)
        if self.pretrained is not None and not isinstance(recipe, PresetRecipe):
            raise SystemExit(
                f"--pretrained: {self.arch} is a recipe, trained from scratch, with no pretrained "
                "weights; pretrained weights are for the presets of vit_layers_flax.list_models() "
                "(--arch vit_tiny_patch16_224, deit_tiny_patch16_224, ...)"
            )
        fill = {
            f: getattr(recipe, f)
            for f in ("epochs", "batch_size", "learning_rate", "weight_decay", "warmup_epochs", "image_size")
            if getattr(self, f) is None
        }
        config = dataclasses.replace(self, **fill)
        if isinstance(recipe, PresetRecipe):
            recipe.check_image_size(config.image_size)
        return config


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` plus BatchNorm's running statistics (``{}`` without BatchNorm)."""

    batch_stats: Any = dataclasses.field(default_factory=dict)


# the model, the optimizer and the two steps -----------------------------------------------


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW with linear warmup then cosine decay; no weight decay on biases and norms."""
    total = config.epochs * steps_per_epoch
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=min(config.warmup_epochs * steps_per_epoch, total // 2),
        decay_steps=total,
        end_value=config.learning_rate * 0.01,
    )
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask)


def create_state(model, tx, sample_images, seed: int, mesh: Mesh, variables=None) -> TrainState:
    """The train state of ``variables`` (default: the model initialised on the host's first
    batch shape), replicated on ``mesh``."""
    if variables is None:
        variables = jax.jit(model.init)(jax.random.key(seed), sample_images)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )
    return jax.device_put(state, NamedSharding(mesh, P()))


def _cross_entropy(logits, labels):
    """Per-example cross-entropy, in float32 at least (bfloat16 logits are upcast)."""
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(dtype), labels)


def train_step(state: TrainState, images, labels, key) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW step on a batch ``(B, H, W, C)`` with labels ``(B,)``; returns the mean
    loss and accuracy. Dropout keys are ``fold_in(key, step)`` (``key``: any PRNG key;
    :func:`dropout_key` makes the one :func:`train` uses)."""
    has_batch_norm = bool(state.batch_stats)

    def loss_fn(params):
        variables = {"params": params} | ({"batch_stats": state.batch_stats} if has_batch_norm else {})
        rngs = {"dropout": jax.random.fold_in(key, state.step)}
        if has_batch_norm:
            logits, updates = state.apply_fn(
                variables, images, train=True, rngs=rngs, mutable=["batch_stats"]
            )
        else:
            logits, updates = state.apply_fn(variables, images, train=True, rngs=rngs), {}
        return _cross_entropy(logits, labels).mean(), (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if has_batch_norm:
        state = state.replace(batch_stats=updates["batch_stats"])
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: TrainState, images, labels, mask) -> dict[str, jax.Array]:
    """Summed loss and correct count over the rows where ``mask`` is 1 (padding is 0)."""
    variables = {"params": state.params} | ({"batch_stats": state.batch_stats} if state.batch_stats else {})
    logits = state.apply_fn(variables, images, train=False)
    correct = (jnp.argmax(logits, -1) == labels) * mask
    return {"loss": jnp.sum(_cross_entropy(logits, labels) * mask), "correct": jnp.sum(correct)}


@dataclasses.dataclass
class Steps:
    """The train and eval steps jitted over ``mesh``: batch split on ``data``, state replicated."""

    mesh: Mesh

    def __post_init__(self):
        replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        batch = self.batch_sharding
        self.train = jax.jit(
            train_step,
            in_shardings=(replicated, batch, batch, replicated),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        self.eval = jax.jit(
            eval_step, in_shardings=(replicated, batch, batch, batch), out_shardings=replicated
        )

    def shard(self, *arrays: np.ndarray) -> list[jax.Array]:
        """Global batches -> arrays split over the mesh; each process feeds its own rows."""
        out = []
        for array in arrays:
            rows = len(array) // jax.process_count()
            local = array[jax.process_index() * rows : (jax.process_index() + 1) * rows]
            out.append(jax.make_array_from_process_local_data(self.batch_sharding, local, array.shape))
        return out


def make_mesh() -> Mesh:
    """A one-axis mesh (``data``) over every device of every process."""
    return Mesh(np.asarray(jax.devices()), ("data",))


# data order and evaluation ---------------------------------------------------------------


def epoch_order(seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
    """Row indices of epoch ``epoch``'s batches, ``(steps, batch_size)``: a permutation
    seeded by ``(seed, epoch)``, the last incomplete batch dropped."""
    order = np.random.default_rng((seed, epoch)).permutation(n)
    steps = n // batch_size
    return order[: steps * batch_size].reshape(steps, batch_size)


def evaluate(state: TrainState, steps: Steps, images, labels, batch_size: int) -> dict[str, float]:
    """Accuracy and mean loss over a whole split (padded to full batches, padding masked)."""
    n = len(images)
    padded = -(-n // batch_size) * batch_size
    pad = ((0, padded - n),) + ((0, 0),) * (images.ndim - 1)
    images = np.pad(images, pad)
    labels = np.pad(labels, (0, padded - n))
    mask = (np.arange(padded) < n).astype(np.float32)
    loss = correct = 0.0
    for start in range(0, padded, batch_size):
        rows = slice(start, start + batch_size)
        totals = steps.eval(state, *steps.shard(images[rows], labels[rows], mask[rows]))
        loss, correct = loss + totals["loss"], correct + totals["correct"]
    return {"loss": float(loss) / n, "accuracy": float(correct) / n}


# checkpoints and the learning curve --------------------------------------------------------


class Checkpoints:
    """Orbax checkpoints of the train state and the metric history, one per epoch, each
    numbered by the epochs done (``checkpoints/1`` after the first)."""

    def __init__(self, workdir: Path, keep: int = 3):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            (workdir / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def epochs_done(self) -> int | None:
        """The epochs the newest checkpoint has done, or ``None`` without one."""
        return self.manager.latest_step()

    def save(self, epochs_done: int, state: TrainState, history: list[dict]) -> None:
        ocp = self._ocp
        self.manager.save(
            epochs_done,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(serialization.to_state_dict(state)),
                history=ocp.args.JsonSave(history),
            ),
        )
        self.manager.wait_until_finished()

    def restore(self, epochs_done: int, like: TrainState) -> tuple[TrainState, list[dict]]:
        """The state saved after ``epochs_done`` epochs, with ``like``'s structure, dtypes and
        shardings."""
        ocp = self._ocp
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            serialization.to_state_dict(like),
        )
        restored = self.manager.restore(
            epochs_done,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()),
        )
        return serialization.from_state_dict(like, restored["state"]), list(restored["history"])

    def close(self) -> None:
        self.manager.close()


def save_learning_curve(history: list[dict], path: Path, title: str) -> None:
    """Train/test loss and accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["test_loss"] for h in history], label="test")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    acc_ax.plot(epochs, [h["test_accuracy"] for h in history], label="test")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# the run -------------------------------------------------------------------------------------


def load_data(config: Config, recipe: Recipe | PresetRecipe) -> Dataset:
    """The data at ``config.image_size``, standardised with the training split's statistics
    (a recipe) or normalised with the pretrained weights' mean and std (a preset)."""
    options = dict(test_fraction=config.test_fraction, seed=config.seed, normalize=recipe.normalization)
    if config.data is None:
        dataset = load_digits_dataset(config.image_size, **options)
    else:
        dataset = load_folder_dataset(config.data, config.image_size, **options)
    return dataset.with_channels(recipe.input_channels(dataset.channels))


def build_model(
    config: Config, recipe: Recipe | PresetRecipe, data: Dataset, *, pretrained: str | None
) -> tuple[Any, dict[str, Any] | None]:
    """``(model, variables)`` for ``data``: a recipe's model (``variables`` ``None``:
    :func:`create_state` initialises it), or a preset's from ``create_model`` with its
    ``pretrained`` weights (``"hub"``, a path, ``None``: initialised from the seed) adapted
    to the data's classes and ``config.image_size``, blocks scanned."""
    dtype = DTYPES[config.dtype]
    num_classes = len(data.classes)
    if isinstance(recipe, Recipe):
        try:
            model = recipe.build(
                num_classes=num_classes, channels=data.channels, image_size=config.image_size, dtype=dtype
            )
        except ValueError as error:  # the model's own check of its configuration
            raise SystemExit(f"error: {config.arch} at --image-size {config.image_size}: {error}") from None
        return model, None
    try:
        return recipe.create(
            num_classes=num_classes,
            channels=data.channels,
            image_size=config.image_size,
            pretrained=pretrained,
            rng=jax.random.key(config.seed),
            dtype=dtype,
            scan=True,  # each stack of identical blocks compiled once, not once per block
        )
    except (OSError, ValueError, ImportError) as error:  # a missing or foreign file, no hub client
        raise SystemExit(f"error: --pretrained {pretrained}: {error}") from None


def new_workdir(arch: str, root: Path = Path("runs")) -> Path:
    """A folder of its own for a new run: ``runs/<arch>-<date>-<time>`` (``-2`` ... if taken)."""
    stem = root / f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir, n = stem, 1
    while workdir.exists():
        n += 1
        workdir = stem.with_name(f"{stem.name}-{n}")
    return workdir


def newest_workdir(arch: str, root: Path = Path("runs")) -> Path:
    """The newest run of ``arch`` under ``root``, for ``--resume`` without ``--workdir``."""
    runs = sorted(
        (p for p in root.glob(f"{arch}-*") if (p / "run.json").exists()), key=lambda p: p.stat().st_mtime
    )
    if not runs:
        raise SystemExit(f"--resume: no run of {arch} under {root}/ to resume (pass --workdir)")
    return runs[-1]


def _check_run_config(workdir: Path, config: Config, resume: bool) -> None:
    """Refuse to mix runs: a fresh run needs an empty workdir, a resumed one the same config."""
    saved_path = workdir / "run.json"
    if not resume:
        if (workdir / "checkpoints").exists() and any((workdir / "checkpoints").iterdir()):
            raise SystemExit(
                f"{workdir} holds another run's checkpoints: add --resume to continue it, or leave out "
                "--workdir to start a new run in a folder of its own"
            )
        return
    if not saved_path.exists():
        raise SystemExit(f"--resume: no run to resume in {workdir} (no run.json)")
    # a run.json from before a field existed: the run had the field's default
    saved = dataclasses.asdict(Config(arch=config.arch).resolved()) | json.loads(saved_path.read_text())
    differs = {k: (v, saved.get(k)) for k, v in dataclasses.asdict(config).items() if saved.get(k) != v}
    if differs:
        lines = ", ".join(f"{k}: saved {old!r}, now {new!r}" for k, (new, old) in differs.items())
        raise SystemExit(f"--resume: this configuration differs from the saved run ({lines})")


def train(
    config: Config,
    workdir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """Train ``config`` and return ``{'history': [...], 'test_accuracy': float, 'state': ...}``.

    ``dataset`` replaces the data ``config`` names (tests pass small ones). A preset starts
    from ``config.pretrained``'s weights, unless a resumed run restores a checkpoint.
    """
    from tqdm.auto import tqdm

    config = config.resolved()
    recipe = get_recipe(config.arch)
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    data = load_data(config, recipe) if dataset is None else dataset  # input errors first
    if config.pretrained not in (None, HUB) and not resume and not Path(config.pretrained).is_file():
        raise SystemExit(f"error: --pretrained {config.pretrained}: no such file")
    _check_run_config(workdir, config, resume)
    workdir.mkdir(parents=True, exist_ok=True)

    mesh = make_mesh() if mesh is None else mesh
    if config.batch_size % mesh.devices.size or config.batch_size % jax.process_count():
        raise SystemExit(
            f"--batch-size {config.batch_size} must be a multiple of the {mesh.devices.size} devices "
            f"and {jax.process_count()} processes"
        )
    if len(data.train_images) < config.batch_size:
        raise SystemExit(
            f"{len(data.train_images)} training images, fewer than one batch of {config.batch_size}"
        )
    steps_per_epoch = len(data.train_images) // config.batch_size

    checkpoints = Checkpoints(workdir)
    try:
        done = checkpoints.epochs_done() if resume else None
        # with a checkpoint to restore, only the model's structure: the weights are not read again
        pretrained = config.pretrained if done is None else None
        model, variables = build_model(config, recipe, data, pretrained=pretrained)
        if is_main and not resume:  # the run exists once its weights could be read
            (workdir / "run.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        tx = make_optimizer(config, steps_per_epoch)
        state = create_state(model, tx, data.train_images[: config.batch_size], config.seed, mesh, variables)
        del variables  # the state holds them (replicated on the mesh)
        steps = Steps(mesh)
        key = jax.device_put(dropout_key(config.seed + 1), NamedSharding(mesh, P()))

        history: list[dict] = []
        start_epoch = 0
        if done is not None:
            state, history = checkpoints.restore(done, like=state)
            start_epoch = done

        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            order = epoch_order(config.seed, epoch, len(data.train_images), config.batch_size)
            bar = tqdm(
                order,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=not (progress and is_main),
                leave=False,
                file=sys.stderr,
            )
            metrics = []
            for i, rows in enumerate(bar):
                images, labels = steps.shard(data.train_images[rows], data.train_labels[rows])
                state, step_metrics = steps.train(state, images, labels, key)
                metrics.append(step_metrics)
                if i % 10 == 0 or i == len(order) - 1:  # reading a value waits for the device
                    bar.set_postfix(
                        loss=f"{float(step_metrics['loss']):.4f}",
                        acc=f"{float(step_metrics['accuracy']):.3f}",
                    )
            train_metrics = jax.tree.map(lambda *xs: float(np.mean(xs)), *metrics)
            test = evaluate(state, steps, data.test_images, data.test_labels, config.batch_size)
            record = {
                "epoch": epoch + 1,
                "step": int(state.step),
                "train_loss": train_metrics["loss"],
                "train_accuracy": train_metrics["accuracy"],
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
                "seconds": time.perf_counter() - started,
            }
            history.append(record)
            checkpoints.save(epoch + 1, state, history)
            if is_main:
                save_learning_curve(
                    history, workdir / "learning_curve.png", f"{config.arch} on {config.data or 'digits'}"
                )
                print(
                    f"epoch {epoch + 1:3d}/{config.epochs}  train loss {record['train_loss']:.4f} "
                    f"acc {record['train_accuracy']:.4f}  test loss {record['test_loss']:.4f} "
                    f"acc {record['test_accuracy']:.4f}  ({record['seconds']:.1f} s)",
                    flush=True,
                )
    finally:
        checkpoints.close()

    accuracy = history[-1]["test_accuracy"] if history else float("nan")
    return {"history": history, "test_accuracy": accuracy, "state": state, "steps": steps, "data": data}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        default=DEFAULT,
        metavar="ARCH",
        help=f"one of the {len(RECIPES)} recipes, trained from scratch: {', '.join(sorted(RECIPES))} "
        f"(default {DEFAULT}); or a pretrained preset (name or name.tag), see --pretrained: "
        f"{', '.join(preset_names())}",
    )
    parser.add_argument(
        "--pretrained",
        metavar="hub|FILE",
        help="fine-tune the preset --arch from weights: 'hub' downloads its published ones (the 'hub' "
        "extra), FILE is a .safetensors file (or torch checkpoint) in timm's layout (default: the preset "
        "from scratch). A preset's images are RGB (gray ones repeated) normalised with its weights' "
        "mean and std",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="square image size (default: the recipe's; for a preset a small size it takes, e.g. 32 for "
        "ViT's 16-pixel patches; its position embedding is resampled)",
    )
    parser.add_argument("--data", help="folder with one subfolder of images per class (default: digits)")
    parser.add_argument(
        "--workdir",
        help="checkpoints, run.json and learning_curve.png (default: a new runs/<arch>-<date>-<time>)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --workdir from its newest checkpoint (default: the newest run of --arch)",
    )
    parser.add_argument(
        "--epochs", type=int, help="default: the architecture's recipe, or the presets' (configs.py)"
    )
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    parser.add_argument(
        "--learning-rate", type=float, help="peak AdamW learning rate (default: the recipe's)"
    )
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: the recipe's)")
    parser.add_argument("--warmup-epochs", type=int, help="linear warmup before the cosine decay")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, data split and order, dropout")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="compute dtype")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the data")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first")
    return parser.parse_args(argv)


def _resume_command(argv: list[str], workdir: Path) -> str:
    """The command line that continues the run: the same options, ``--workdir`` and ``--resume``."""
    options, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workdir":
            skip = True
        elif not (arg == "--resume" or arg.startswith("--workdir=")):
            options.append(arg)
    return shlex.join(["python", "examples/train.py", *options, "--workdir", str(workdir), "--resume"])


def main(argv: list[str] | None = None) -> float:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.distributed:
        jax.distributed.initialize()
    config = Config(
        arch=args.arch,
        data=None if args.data is None else str(Path(args.data).expanduser().absolute()),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        dtype=args.dtype,
        test_fraction=args.test_fraction,
        image_size=args.image_size,
        pretrained=(
            None
            if args.pretrained is None
            else HUB
            if args.pretrained == HUB
            else str(Path(args.pretrained).expanduser().absolute())
        ),
    )
    config.resolved()  # an unknown --arch, --pretrained for a recipe: stop before anything else
    if args.workdir is not None:
        workdir = Path(args.workdir)
    else:
        workdir = newest_workdir(args.arch) if args.resume else new_workdir(args.arch)
    if jax.process_index() == 0:
        devices = jax.devices()
        weights = "" if config.pretrained is None else f", weights {config.pretrained}"
        print(
            f"{args.arch}{weights}: {len(devices)} device(s) ({devices[0].platform}), "
            f"{jax.process_count()} process(es)"
        )
    started = time.perf_counter()
    try:
        result = train(config, workdir, resume=args.resume, progress=not args.no_progress)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        again = _resume_command(argv, workdir)
        raise SystemExit(
            f"\ninterrupted; the last finished epoch is checkpointed. To continue: {again}"
        ) from None
    if jax.process_index() == 0:
        print(
            f"wall time: {time.perf_counter() - started:.1f} s; run folder: {workdir} "
            f"(learning_curve.png, checkpoints); run the command again for a new run"
        )
        print(f"test accuracy: {result['test_accuracy']:.4f}")
    return result["test_accuracy"]


if __name__ == "__main__":
    main()
