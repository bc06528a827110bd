"""The benchmark's configurations build, and its runner writes what the README shows."""

import json

import jax
import jax.numpy as jnp
import pytest

from architectures import ARCHITECTURES, CONFIG_NAMES, PAPER, config
from bench import compile_timed, main, markdown, measure


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_small_readme_and_paper_configurations_build(arch):
    for name in ("small", "readme", "paper"):
        cfg = config(arch, name)
        model = cfg.flax_model()
        images = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
        variables = jax.eval_shape(model.init, jax.random.key(0), images)
        logits = jax.eval_shape(model.apply, variables, images)
        assert logits.shape == (1, cfg.kwargs["num_classes"]), (arch, name)


def test_paper_configurations_are_the_named_paper_sizes():
    assert set(PAPER) == set(ARCHITECTURES)
    vit = config("vit", "paper")
    assert (vit.kwargs["dim"], vit.kwargs["depth"], vit.kwargs["heads"], vit.image_size) == (384, 12, 6, 224)
    assert config("cait", "paper").kwargs["depth"] == 24 and config("levit", "paper").image_size == 224
    tiny_imagenet = config("vit-small-datasets", "paper")  # the paper's own data: 200 classes, 64 px
    assert (tiny_imagenet.kwargs["num_classes"], tiny_imagenet.image_size) == (200, 64)
    others = [config(arch, "paper") for arch in ARCHITECTURES if arch != "vit-small-datasets"]
    assert all(c.kwargs["num_classes"] == 1000 and c.image_size >= 224 for c in others)


def test_b16_is_vit_only_and_unknown_names_are_refused():
    assert config("vit", "b16").kwargs["dim"] == 768
    assert config("cvt", "b16") is None
    assert "b16" in CONFIG_NAMES
    with pytest.raises(ValueError, match="unknown configuration 'huge'"):
        config("vit", "huge")


def test_measure_interleaves_the_calls_and_reports_each_median():
    order = []
    timings = measure(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, min_seconds=0.0
    )
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(timings) == {"a", "b"} and all(t.median >= 0 and t.first >= 0 for t in timings.values())


def test_compile_timed_compiles_afresh_each_time():
    traces = []

    def double(x):
        traces.append(x.shape)
        return 2 * x

    compiled, seconds = compile_timed(jax.jit(double), jnp.ones(3), repeats=3)
    assert len(traces) == 3 and len(seconds) == 3 and all(t > 0 for t in seconds)
    assert compiled(jnp.arange(3.0)).tolist() == [0.0, 2.0, 4.0]


def test_runner_writes_json_and_markdown(tmp_path):
    """CvT: a BatchNorm model, whose statistics the donated train state must not take
    from the variables inference uses."""
    out = tmp_path / "result"
    args = ["--arch", "cvt", "--configs", "small", "--no-torch", "--repeats", "1", "--min-seconds", "0"]
    args += ["--compile-repeats", "1"]
    results = main([*args, "--out", str(out)])
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["machine"]["backend"] == "cpu" and saved["settings"]["dtype"] == "float32"
    (record,) = saved["results"]
    assert record["arch"] == "cvt" and record["config"] == "small" and record["batch"] == 32
    jax_figures = record["jax"]
    assert jax_figures["params"] > 0 and jax_figures["train_flops"] > jax_figures["infer_flops"] > 0
    assert jax_figures["infer_images_per_s"] > 0 and jax_figures["train_images_per_s"] > 0
    assert jax_figures["train_temp_bytes"] > 0
    assert jax_figures["train_compile_samples_s"] == [jax_figures["train_compile_s"]]
    table = out.with_suffix(".md").read_text()
    assert table == markdown(results) and "| cvt | small | 32 |" in table


def test_runner_refuses_unknown_architectures_for_torch_compile(capsys):
    with pytest.raises(SystemExit):
        main(["--torch-compile", "vitt"])
    assert "unknown architectures ['vitt']" in capsys.readouterr().err


def test_runner_refuses_fewer_than_one_repeat(capsys):
    with pytest.raises(SystemExit):
        main(["--compile-repeats", "0"])
    assert "--compile-repeats take 1 or more, got 5 and 0" in capsys.readouterr().err
