"""The pieces of ``examples/train.py``: data and its errors, one step per architecture,
checkpoints, resume, and the sharded step. Full training runs are not tests here
(``nox -s demo`` runs one)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import train
from configs import RECIPES, get_recipe
from data import DataError, load_digits_dataset, load_folder_dataset

HERE = Path(__file__).resolve().parent


def _small_digits(arch: str, n_train: int = 96, n_test: int = 40):
    recipe = RECIPES[arch]
    data = load_digits_dataset(recipe.image_size).with_channels(recipe.input_channels(1))
    return dataclasses.replace(
        data,
        train_images=data.train_images[:n_train],
        train_labels=data.train_labels[:n_train],
        test_images=data.test_images[:n_test],
        test_labels=data.test_labels[:n_test],
    )


# data ---------------------------------------------------------------------------------------


def test_digits_split_is_seeded_stratified_and_standardised():
    a, b = load_digits_dataset(16), load_digits_dataset(16)
    assert a.train_images.shape == (1437, 16, 16, 1) and a.test_images.shape == (360, 16, 16, 1)
    assert a.train_images.dtype == np.float32 and a.train_labels.dtype == np.int32
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert not np.array_equal(load_digits_dataset(16, seed=1).test_labels, a.test_labels)
    assert set(np.bincount(a.test_labels)) <= {35, 36, 37}  # stratified: ~36 per class
    assert abs(float(a.train_images.mean())) < 1e-4 and abs(float(a.train_images.std()) - 1) < 1e-3
    assert a.with_channels(3).train_images.shape == (1437, 16, 16, 3)


def _write_images(folder: Path, sizes: list[tuple[int, int]], color: tuple[int, int, int]) -> None:
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, color).save(folder / f"{i}.png")


def test_folder_dataset_reads_classes_resizes_and_splits(tmp_path):
    _write_images(tmp_path / "cats", [(20, 30), (40, 40), (9, 9), (32, 16)], (250, 10, 10))
    _write_images(tmp_path / "dogs", [(12, 12), (50, 20), (33, 33), (8, 64)], (10, 10, 250))
    data = load_folder_dataset(tmp_path, 24, test_fraction=0.5)
    assert data.classes == ("cats", "dogs")
    assert data.train_images.shape == (4, 24, 24, 3) and data.test_images.shape == (4, 24, 24, 3)
    assert sorted(data.test_labels.tolist()) == [0, 0, 1, 1]
    # red images are cats, blue ones dogs, after standardisation too
    red_minus_blue = data.test_images[..., 0].mean(axis=(1, 2)) - data.test_images[..., 2].mean(axis=(1, 2))
    assert ((red_minus_blue > 0) == (data.test_labels == 0)).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "found no subfolders"),
        (lambda root: _write_images(root / "only", [(8, 8)] * 3, (1, 2, 3)), "at least two classes"),
        (
            lambda root: (
                (root / "a").mkdir(parents=True) or _write_images(root / "b", [(8, 8)] * 2, (0, 0, 0))
            ),
            "'a' has no images",
        ),
        (
            lambda root: (
                _write_images(root / "a", [(8, 8)], (0, 0, 0))
                or _write_images(root / "b", [(8, 8)] * 2, (0, 0, 0))
            ),
            "at least two images",
        ),
    ],
    ids=["missing", "empty", "one-class", "empty-class", "one-image-class"],
)
def test_folder_dataset_errors_say_what_is_wrong(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=message):
        load_folder_dataset(root, 16)


def test_unreadable_image_is_named(tmp_path):
    _write_images(tmp_path / "a", [(8, 8)] * 2, (0, 0, 0))
    _write_images(tmp_path / "b", [(8, 8)] * 2, (9, 9, 9))
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_folder_dataset(tmp_path, 16)


def test_command_line_stops_with_a_clear_message_on_bad_data(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit) as info:
        train.main(["--data", str(tmp_path / "data"), "--workdir", str(tmp_path / "run"), "--no-progress"])
    assert "error: --data" in str(info.value) and "no subfolders" in str(info.value)


# one training step per architecture -----------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(RECIPES))
def test_training_steps_lower_the_loss(arch):
    """Every recipe's model, built as train.py builds it, learns a fixed batch: five AdamW
    steps (no warmup) lower its loss; BatchNorm models update their running statistics."""
    recipe = RECIPES[arch]
    config = train.Config(arch=arch, batch_size=8, warmup_epochs=0).resolved()
    mesh = train.make_mesh()
    channels = recipe.input_channels(1)
    data = _small_digits(arch, n_train=8, n_test=8)
    images, labels = data.train_images, data.train_labels
    model = recipe.build(num_classes=10, channels=channels)
    state = train.create_state(model, train.make_optimizer(config, steps_per_epoch=10), images, 0, mesh)
    stats_before = jax.device_get(state.batch_stats)
    steps = train.Steps(mesh)
    batch = steps.shard(images, labels)
    before = train.evaluate(state, steps, images, labels, batch_size=8)["loss"]
    for _ in range(5):
        state, metrics = steps.train(state, *batch, train.dropout_key(1))
        assert np.isfinite(float(metrics["loss"])) and 0 <= float(metrics["accuracy"]) <= 1
    assert int(state.step) == 5
    after = train.evaluate(state, steps, images, labels, batch_size=8)["loss"]
    assert after < before, f"{arch}: loss {before:.4f} -> {after:.4f} after five steps on one batch"
    if stats_before:  # BatchNorm models
        changed = jax.tree.map(
            lambda a, b: not np.array_equal(a, b), stats_before, jax.device_get(state.batch_stats)
        )
        assert any(jax.tree.leaves(changed)), "train mode did not update the running statistics"


def test_dropout_keys_are_reproducible_and_fresh_each_step():
    """train.py's dropout key (rbg): the same state and key give the same step; the next
    step (its count folded into the key) and another key draw other dropout masks."""
    recipe = RECIPES["vit"]
    assert recipe.kwargs["dropout"] > 0
    config = train.Config(batch_size=8, warmup_epochs=0).resolved()
    mesh = train.make_mesh()
    data = _small_digits("vit", n_train=8, n_test=8)
    model = recipe.build(num_classes=10, channels=1)
    state = train.create_state(model, train.make_optimizer(config, 10), data.train_images, 0, mesh)
    steps = train.Steps(mesh)
    batch = steps.shard(data.train_images, data.train_labels)

    def loss(state, key):
        return float(steps.train(jax.tree.map(jnp.copy, state), *batch, key)[1]["loss"])

    key = train.dropout_key(1)
    assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl="rbg"))
    assert loss(state, key) == loss(state, key)
    assert loss(state, key) != loss(state, train.dropout_key(2))
    assert loss(state, key) != loss(state.replace(step=state.step + 1), key)


def test_bfloat16_computes_in_bfloat16_with_float32_parameters():
    recipe = RECIPES["vit"]
    config = train.Config(batch_size=8, dtype="bfloat16").resolved()
    images = np.asarray(jax.random.normal(jax.random.key(0), (8, recipe.image_size, recipe.image_size, 1)))
    model = recipe.build(num_classes=10, channels=1, dtype=jnp.bfloat16)
    state = train.create_state(model, train.make_optimizer(config, 10), images, 0, train.make_mesh())
    assert {p.dtype for p in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert state.apply_fn({"params": state.params}, images).dtype == jnp.bfloat16
    steps = train.Steps(train.make_mesh())
    state, metrics = steps.train(state, *steps.shard(images, np.zeros(8, np.int32)), jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))


# checkpoints and resume ---------------------------------------------------------------------


def _same_leaves(a, b) -> bool:
    """Step, parameters, optimizer state and BatchNorm statistics are bit-identical."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def _run(workdir: Path, data, *, epochs: int = 2, resume: bool = False, arch: str = "vit"):
    config = train.Config(arch=arch, epochs=epochs, batch_size=32, warmup_epochs=1)
    return train.train(config, workdir, resume=resume, progress=False, dataset=data)


def test_checkpoint_restores_the_state_and_its_accuracy_exactly(tmp_path):
    data = _small_digits("vit")
    result = _run(tmp_path, data, epochs=1)
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert json.loads((tmp_path / "run.json").read_text())["arch"] == "vit"

    checkpoints = train.Checkpoints(tmp_path)
    assert checkpoints.epochs_done() == 1  # checkpoints count epochs as the log does
    restored, history = checkpoints.restore(1, like=result["state"])
    checkpoints.close()
    assert history == result["history"]
    assert _same_leaves(restored, result["state"])
    accuracy = train.evaluate(restored, result["steps"], data.test_images, data.test_labels, 32)["accuracy"]
    assert accuracy == history[-1]["test_accuracy"]


@pytest.mark.parametrize("arch", ["vit", "cvt"])  # cvt: BatchNorm statistics are restored too
def test_resume_after_an_interruption_continues_exactly(tmp_path, arch):
    data = _small_digits(arch)
    straight = _run(tmp_path / "straight", data, epochs=2, arch=arch)

    # an interrupted run: the same run, whose last epoch never reached its checkpoint
    shutil.copytree(tmp_path / "straight", tmp_path / "interrupted")
    shutil.rmtree(tmp_path / "interrupted" / "checkpoints" / "2")
    resumed = _run(tmp_path / "interrupted", data, epochs=2, resume=True, arch=arch)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]

    drop_time = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert drop_time(resumed["history"]) == drop_time(straight["history"])
    assert _same_leaves(resumed["state"], straight["state"])


def test_runs_do_not_mix(tmp_path):
    data = _small_digits("vit")
    _run(tmp_path, data, epochs=1)
    with pytest.raises(SystemExit, match="holds another run's checkpoints: add --resume"):
        _run(tmp_path, data, epochs=1)
    with pytest.raises(SystemExit, match="epochs: saved 1, now 2"):
        _run(tmp_path, data, epochs=2, resume=True)
    with pytest.raises(SystemExit, match="no run to resume"):
        _run(tmp_path / "elsewhere", data, resume=True)
    # a run.json written before image_size and pretrained existed: they had their defaults
    run_json = tmp_path / "run.json"
    old = {k: v for k, v in json.loads(run_json.read_text()).items() if k not in ("image_size", "pretrained")}
    run_json.write_text(json.dumps(old))
    assert len(_run(tmp_path, data, epochs=1, resume=True)["history"]) == 1


def test_each_run_gets_a_folder_of_its_own_and_resume_finds_the_newest(tmp_path):
    first = train.new_workdir("vit", tmp_path)
    first.mkdir()
    (first / "run.json").write_text("{}")
    second = train.new_workdir("vit", tmp_path)
    assert second != first and second.name.startswith("vit-")
    assert train.newest_workdir("vit", tmp_path) == first
    with pytest.raises(SystemExit, match="no run of cvt"):
        train.newest_workdir("cvt", tmp_path)


def test_data_errors_come_before_the_run_folder_checks(tmp_path):
    _run(tmp_path / "run", _small_digits("vit"), epochs=1)
    config = train.Config(arch="vit", data=str(tmp_path / "nonexistent"), epochs=1)
    with pytest.raises(DataError):
        train.train(config, tmp_path / "run", progress=False)


def test_an_interrupted_run_says_how_to_resume(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train", interrupted)
    with pytest.raises(SystemExit, match=r"--workdir .*run --resume"):
        train.main(["--workdir", str(tmp_path / "run"), "--no-progress"])


# many devices -------------------------------------------------------------------------------


def _sharded_losses(arch: str, devices: int) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    script = str(HERE / "sharded_losses.py")
    out = subprocess.run([sys.executable, script, arch], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


# CvT: the sharded step, dropout and AdamW as any model, plus BatchNorm statistics over the
# whole sharded batch
@pytest.mark.parametrize("arch", ["cvt"])
def test_eight_simulated_devices_give_the_single_device_losses(arch):
    one, eight = _sharded_losses(arch, 1), _sharded_losses(arch, 8)
    assert (one["devices"], eight["devices"]) == (1, 8)
    # three AdamW steps, dropout included, in float64: equal up to the order of the batch
    # reductions (float32 differs by ~1e-5 here: see sharded_losses.py)
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-12)


# pretrained presets ---------------------------------------------------------------------------


def test_a_pretrained_preset_fine_tunes_from_its_weights_and_resumes_without_them(
    tmp_path, monkeypatch, capsys
):
    """``--arch <preset> --pretrained FILE``: the first step starts from the file's weights
    (resampled to 32 x 32, a new 10-class head, blocks scanned), the digits are RGB normalised
    with the weights' statistics, and a resumed run restores its checkpoint without the file."""
    timm = pytest.importorskip("timm")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    name = "vit_tiny_patch16_224"
    state_dict = {k: np.ascontiguousarray(v.numpy()) for k, v in timm.create_model(name).state_dict().items()}
    weights = tmp_path / "weights.safetensors"
    safetensors_numpy.save_file(state_dict, str(weights))

    initial = []
    create_state = train.create_state

    def spy(*args, **kwargs):
        state = create_state(*args, **kwargs)
        initial.append(jax.device_get(state.params))  # copied: the first step donates the state
        return state

    monkeypatch.setattr(train, "create_state", spy)
    argv = ["--arch", name, "--pretrained", str(weights), "--epochs", "1", "--workdir", str(tmp_path / "run")]
    accuracy = train.main([*argv, "--test-fraction", "0.8", "--no-progress"])  # five steps
    out = capsys.readouterr().out
    assert f"test accuracy: {accuracy:.4f}" in out and 0 <= accuracy <= 1

    params = initial[0]
    fc1 = params["transformer"]["layers"]["ff"]["fc1"]["kernel"]  # scan=True: stacked blocks
    np.testing.assert_array_equal(fc1[3], state_dict["blocks.3.mlp.fc1.weight"].T)
    patch = state_dict["patch_embed.proj.weight"].transpose(2, 3, 1, 0).reshape(16 * 16 * 3, 192)
    np.testing.assert_array_equal(params["to_patch_embedding"]["proj"]["kernel"], patch)
    assert params["embedding"]["pos_embedding"].shape == (1 + 2 * 2, 192)  # resampled to 32 x 32
    assert params["mlp_head"]["kernel"].shape == (192, 10)  # a new head for the digits
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (saved["image_size"], saved["pretrained"], saved["learning_rate"]) == (32, str(weights), 1e-4)

    weights.unlink()  # a resumed run restores its checkpoint: the weights are not read again
    assert train.main([*argv, "--test-fraction", "0.8", "--no-progress", "--resume"]) == accuracy
    with pytest.raises(SystemExit, match=r"pretrained: saved .*, now 'hub'"):
        train.main([*argv[:2], "--pretrained", "hub", *argv[4:], "--test-fraction", "0.8", "--resume"])

    # --pretrained hub: the published weights, here from an offline Hugging Face cache
    pytest.importorskip("huggingface_hub")
    from vit_layers_flax.testing import offline_hub

    offline_hub(tmp_path / "hub", monkeypatch, {name: state_dict})
    config = train.Config(arch=name, pretrained="hub").resolved()
    recipe = get_recipe(name)
    data = dataclasses.replace(load_digits_dataset(32), classes=tuple("abc"))  # three classes
    _, variables = train.build_model(config, recipe, data.with_channels(3), pretrained="hub")
    params = variables["params"]
    np.testing.assert_array_equal(params["transformer"]["layers"]["ff"]["fc1"]["kernel"][3], fc1[3])
    assert params["mlp_head"]["kernel"].shape == (192, 3)


def test_every_preset_has_a_cpu_sized_default_it_takes():
    """Each registered preset's default fine-tuning size is one its model takes, at most the
    preset's own: two patches for the fixed-size ViTs, 32 for LeViT, 120 for CrossViT."""
    from vit_layers_flax import list_models, pretrained_config

    sizes = {}
    for name in list_models():
        recipe = get_recipe(name)
        sizes[name] = recipe.image_size
        assert recipe._takes(sizes[name]) is None, name
        assert 28 <= sizes[name] <= max(pretrained_config(name).input_size), name
    expected = {"vit_tiny_patch16_224": 32, "levit_128s": 32, "crossvit_tiny_240": 120, "cvt_13": 28}
    assert {name: sizes[name] for name in expected if name in sizes} == {
        name: size for name, size in expected.items() if name in sizes
    }


def test_digits_normalised_with_pretrained_statistics_are_rgb():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    data = load_digits_dataset(16, normalize=(mean, std))
    assert data.train_images.shape == (1437, 16, 16, 3) and data.test_images.shape == (360, 16, 16, 3)
    raw = load_digits_dataset(16, normalize=((0.0,), (1.0,)))  # the images in [0, 1]
    assert raw.train_images.min() == 0 and raw.train_images.max() == 1
    expected = (raw.train_images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    np.testing.assert_allclose(data.train_images, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--arch", "vit_tiny_patch16"],
            r"--arch 'vit_tiny_patch16': not one of the 17 recipes.*"
            r"nor a pretrained preset.*did you mean \['vit_tiny_patch16_384', 'vit_tiny_patch16_224'",
        ),
        (["--arch", "vti"], r"not one of the 17 recipes \(did you mean \['vit'"),
        (
            ["--arch", "vit", "--pretrained", "hub"],
            "vit is a recipe, trained from scratch, with no pretrained",
        ),
        (
            ["--arch", "vit_tiny_patch16_224", "--image-size", "40"],
            r"--image-size 40: ViT: image_size \(40, 40\) must be divisible by patch_size \(16, 16\)",
        ),
        (
            ["--arch", "vit_tiny_patch16_224", "--pretrained", "missing.safetensors"],
            "missing.safetensors: no such",
        ),
    ],
    ids=["unknown-preset", "unknown-recipe", "recipe-pretrained", "image-size", "missing-file"],
)
def test_arch_and_pretrained_errors_say_what_is_wrong(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        train.main([*argv, "--workdir", str(tmp_path / "run"), "--no-progress"])
    assert not (tmp_path / "run" / "run.json").exists()
