"""Benchmark every vit-flax architecture against its vit-pytorch reference, in one process.

For each architecture and configuration (``architectures.py``): the Flax model's jitted
inference and train step (forward, backward, AdamW update: ``examples/train.py``'s
``train_step``), then the same model in vit-pytorch, eager and under ``torch.compile``, at
the same batch, image size and thread count. Every throughput is the median of
``--repeats`` timings after warm-up; compile times are the first call's (JAX: lowering
plus XLA compilation; torch.compile: the first call minus a steady call); FLOPs come from
XLA's cost analysis of the compiled programs.

    python benchmarks/bench.py                              # every architecture, small and readme
    python benchmarks/bench.py --arch vit simple-vit --configs small
    python benchmarks/bench.py --configs b16 --arch vit --dtype bfloat16 --batch b16=128

Writes ``<out>.json`` (every figure, the machine and the versions) and ``<out>.md`` (the
table the README shows). ``nox -s bench`` runs it with everything installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from architectures import ARCHITECTURES, CONFIG_NAMES, Config, config
from train import TrainState, dropout_key, train_step  # examples/train.py

#: dense bfloat16 peak of the GPUs this was run on (TFLOP/s, without sparsity), for MFU
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}

DEFAULT_BATCH = {"small": 32, "readme": 4, "paper": 8, "b16": 32}


@dataclasses.dataclass
class Timing:
    """Seconds per call: the median of the timings, each averaging enough calls to last
    ``min_seconds``; ``first`` is the first call (compilation included)."""

    first: float
    median: float
    spread: float  # (max - min) / median of the timings


def measure(calls: dict[Any, Callable[[], Any]], *, repeats: int, min_seconds: float) -> dict[Any, Timing]:
    """Time each of ``calls`` (which must block until their work is done), interleaved:
    each round times every call once, so that a slower stretch of a shared machine hits
    JAX and torch alike and their ratio stays fair."""
    first, counts = {}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
        start = time.perf_counter()
        call()  # warm-up after compilation
        counts[name] = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-6)))
    times: dict[Any, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            times[name].append((time.perf_counter() - start) / counts[name])
    timings = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        timings[name] = Timing(first[name], median, (max(ts) - min(ts)) / median)
    return timings


def compile_timed(jitted, *args: Any, repeats: int) -> tuple[Any, list[float]]:
    """``jitted.lower(*args).compile()`` done ``repeats`` times from scratch (JAX's caches
    cleared before each), and the seconds each took: lowering plus XLA compilation. The
    median is the figure reported: on a shared machine one compile can take 1.5x another."""
    seconds = []
    for _ in range(repeats):
        jax.clear_caches()
        start = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        seconds.append(time.perf_counter() - start)
    return compiled, seconds


def _flops(lowered) -> float | None:
    """XLA's FLOP count of the program as lowered, before the backend's optimisation: on a
    GPU the compiled program's count leaves out the matrix products handed to cuBLAS and
    cuDNN, and a rematerialised block's second forward pass is not model work."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, list):  # jax < 0.4.30 returns one dict per device
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops else None


def _temp_bytes(compiled) -> int | None:
    """The compiled program's temporary buffers (activations kept for the backward pass,
    workspace), where the backend reports them."""
    analysis = compiled.memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


Calls = dict[str, Callable[[], Any]]


def prepare_jax(cfg: Config, batch: int, args: argparse.Namespace) -> tuple[dict[str, Any], Calls]:
    """The Flax model's compiled inference and train step: figures known before timing
    (parameters, compile times, FLOPs) and the two calls to time."""
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    model = cfg.flax_model(
        dtype=dtype,
        attention_implementation=args.attention_implementation,
        scan=args.scan or None,
        remat=args.remat or None,
    )
    keys = jax.random.split(jax.random.key(0), 3)
    images = jax.random.normal(keys[0], (batch, cfg.image_size, cfg.image_size, 3))
    labels = jax.random.randint(keys[1], (batch,), 0, cfg.kwargs["num_classes"])
    variables = jax.jit(model.init)(keys[2], images[:1])

    infer, infer_compile = compile_timed(
        jax.jit(model.apply), variables, images, repeats=args.compile_repeats
    )
    own = jax.tree.map(jnp.copy, variables)  # the step donates its state
    state = TrainState.create(
        apply_fn=model.apply,
        params=own["params"],
        tx=optax.adamw(1e-3, weight_decay=0.05),
        batch_stats=own.get("batch_stats", {}),
    )
    key = dropout_key(1)  # as examples/train.py draws dropout: rbg
    step, train_compile = compile_timed(
        jax.jit(train_step, donate_argnums=0), state, images, labels, key, repeats=args.compile_repeats
    )
    holder = [state]

    def train_call():
        holder[0], metrics = step(holder[0], images, labels, key)
        metrics["loss"].block_until_ready()

    info = dict(
        params=sum(x.size for x in jax.tree.leaves(variables["params"])),
        infer_compile_s=statistics.median(infer_compile),
        train_compile_s=statistics.median(train_compile),
        infer_compile_samples_s=infer_compile,
        train_compile_samples_s=train_compile,
        infer_flops=_flops(jax.jit(model.apply).lower(variables, images)),
        train_flops=_flops(jax.jit(train_step).lower(state, images, labels, key)),
        train_temp_bytes=_temp_bytes(step),
    )
    return info, {"infer": lambda: infer(variables, images).block_until_ready(), "train": train_call}


def prepare_torch(
    cfg: Config, batch: int, args: argparse.Namespace, *, compiled: bool
) -> tuple[dict[str, Any], Calls]:
    """vit-pytorch's inference and train step (AdamW), eager or under ``torch.compile``.
    Compiled, both are run once here, so that the compile times are known."""
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if args.torch_device == "cuda" else "cpu")
    torch.manual_seed(0)
    model = cfg.torch_model().to(device)
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
    labels = torch.randint(0, cfg.kwargs["num_classes"], (batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    forward = torch.compile(model) if compiled else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def infer_call():
        model.eval()
        with torch.inference_mode(), autocast:
            forward(images)
        sync()

    def train_call():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        sync()

    calls = {"infer": infer_call, "train": train_call}
    info: dict[str, Any] = dict(
        params=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads()
    )
    if compiled:
        for name, call in calls.items():
            first = measure({name: call}, repeats=1, min_seconds=0.0)[name]
            info[f"{name}_compile_s"] = first.first - first.median
    return info, calls


def bench(cfg: Config, batch: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every side of one configuration, timed together: ``{"jax": ..., "torch_eager": ...,
    "torch_compile": ...}``, each with images per second for ``infer`` and ``train``; a
    side that fails is ``{"error": ...}`` and the others go on."""
    prepared = {"jax": _guarded(prepare_jax, cfg, batch, args)}
    if not args.no_torch:
        prepared["torch_eager"] = _guarded(prepare_torch, cfg, batch, args, compiled=False)
        if "all" in args.torch_compile or cfg.arch in args.torch_compile:
            prepared["torch_compile"] = _guarded(prepare_torch, cfg, batch, args, compiled=True)
    calls = {
        (side, name): call
        for side, result in prepared.items()
        if isinstance(result, tuple)
        for name, call in result[1].items()
    }
    timings = _guarded(measure, calls, repeats=args.repeats, min_seconds=args.min_seconds)
    record: dict[str, dict[str, Any]] = {}
    for side, result in prepared.items():
        if not isinstance(result, tuple):
            record[side] = result
        elif "error" in timings:
            record[side] = timings
        else:
            record[side] = dict(result[0])
            for name in ("infer", "train"):
                timing = timings[side, name]
                record[side][f"{name}_images_per_s"] = batch / timing.median
                record[side][f"{name}_spread"] = timing.spread
    return record


def _guarded(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(*args, **kwargs)``; a failure becomes ``{"error": ...}`` so the others go on."""
    try:
        return run(*args, **kwargs)
    except Exception as error:  # report any failure, keep measuring
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        return {"error": last[:300]}


def machine() -> dict[str, Any]:
    """Where the figures come from: processor, cores, accelerator and library versions."""
    import flax

    info: dict[str, Any] = dict(
        platform=platform.platform(),
        processor=_cpu_name(),
        cores=os.cpu_count(),
        python=platform.python_version(),
        jax=jax.__version__,
        flax=flax.__version__,
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
    )
    try:
        from importlib.metadata import version

        import torch

        info.update(
            torch=torch.__version__, vit_pytorch=version("vit-pytorch"), torch_threads=torch.get_num_threads()
        )
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _ratio(ours: dict, theirs: dict, key: str) -> float | None:
    if key in ours and key in theirs:
        return ours[key] / theirs[key]
    return None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _mfu(record: dict[str, Any], info: dict[str, Any]) -> float | None:
    """Model FLOPs utilisation of the JAX train step: the FLOPs XLA counts in the lowered
    step, per second, over the GPU's dense bfloat16 peak."""
    peak = next((p for name, p in PEAK_BF16_TFLOPS.items() if name in info["device"]), None)
    jax_result = record["jax"]
    if peak is None or "train_flops" not in jax_result or not jax_result["train_flops"]:
        return None
    steps_per_s = jax_result["train_images_per_s"] / record["batch"]
    return jax_result["train_flops"] * steps_per_s / (peak * 1e12)


def markdown(results: dict[str, Any]) -> str:
    """The README table: throughputs, their ratios to vit-pytorch, compile time and FLOPs."""
    info = results["machine"]
    lines = [
        f"Measured {results['date']} on {info['processor']} ({info['cores']} cores, JAX backend "
        f"{info['backend']}: {info['device']}), {results['settings']['dtype']}"
        f"{', scan=True (XLA counts the FLOPs of a scanned block once)' if results['settings'].get('scan') else ''}"
        f"{', remat=True' if results['settings'].get('remat') else ''}; jax {info['jax']}, "
        f"flax {info['flax']}, torch {info.get('torch', '–')} ({info.get('torch_threads', '–')} threads), "
        f"vit-pytorch {info.get('vit_pytorch', '–')}. Images per second, median of "
        f"{results['settings']['repeats']} timings; JAX compile times, median of "
        f"{results['settings'].get('compile_repeats', 1)}; × is JAX over vit-pytorch.",
        "",
        "| architecture | config | batch | params | GFLOP/image (XLA) | JAX compile s (infer / train) "
        "| inference img/s: JAX | eager | compiled | × eager | × compiled "
        "| train step img/s: JAX | eager | compiled | × eager | × compiled |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["results"]:
        ours, eager, compiled = r["jax"], r.get("torch_eager", {}), r.get("torch_compile", {})
        if "error" in ours:
            lines.append(f"| {r['arch']} | {r['config']} | {r['batch']} | JAX failed: {ours['error']} |")
            continue
        gflop = None if ours["infer_flops"] is None else ours["infer_flops"] / r["batch"] / 1e9
        cells = [
            r["arch"],
            r["config"],
            str(r["batch"]),
            f"{ours['params'] / 1e6:.1f} M",
            _fmt(gflop, ".3g"),
            f"{ours['infer_compile_s']:.1f} / {ours['train_compile_s']:.1f}",
        ]
        for kind in ("infer", "train"):
            key = f"{kind}_images_per_s"
            cells += [
                _fmt(ours[key]),
                _fmt(eager.get(key)) if "error" not in eager else "failed",
                _fmt(compiled.get(key)) if "error" not in compiled else "failed",
                _fmt(_ratio(ours, eager, key), ".2f"),
                _fmt(_ratio(ours, compiled, key), ".2f"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    mfu = [(r, _mfu(r, info)) for r in results["results"] if "error" not in r["jax"]]
    mfu = [(r, m) for r, m in mfu if m is not None]
    if mfu:
        lines.append("")
        for r, m in mfu:
            lines.append(
                f"Model FLOPs utilisation, {r['arch']} {r['config']} train step, batch {r['batch']}: "
                f"{100 * m:.1f}% of {info['device']}'s dense bfloat16 peak."
            )
    failures = [
        (r["arch"], r["config"], side, r[side]["error"])
        for r in results["results"]
        for side in ("torch_eager", "torch_compile")
        if "error" in r.get(side, {})
    ]
    if failures:
        lines.append("")
        lines += [f"- {arch} {name}, {side}: {error}" for arch, name, side, error in failures]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHITECTURES), default=list(ARCHITECTURES))
    parser.add_argument("--configs", nargs="+", choices=CONFIG_NAMES, default=["small", "readme"])
    parser.add_argument(
        "--batch",
        nargs="+",
        default=[],
        metavar="CONFIG=N",
        help=f"batch size per configuration (default {DEFAULT_BATCH})",
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure (the median is kept)")
    parser.add_argument(
        "--compile-repeats",
        type=int,
        default=3,
        help="compilations per JAX compile time, from scratch (the median is kept)",
    )
    parser.add_argument("--min-seconds", type=float, default=0.2, help="each timing lasts at least this long")
    parser.add_argument("--no-torch", action="store_true", help="measure the JAX models only")
    parser.add_argument(
        "--torch-compile",
        nargs="+",
        default=["all"],
        metavar="ARCH",
        help="the architectures to also run under torch.compile: names, 'all' or 'none' (default all)",
    )
    parser.add_argument("--attention-implementation", default=None, help="e.g. cudnn (GPU)")
    parser.add_argument("--scan", action="store_true", help="scan=True for the models that take it")
    parser.add_argument("--remat", action="store_true", help="remat=True for every model")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output path without suffix (default benchmarks/results/<date>-<device>-<dtype>)",
    )
    args = parser.parse_args(argv)
    batch = dict(DEFAULT_BATCH)
    for item in args.batch:
        name, _, size = item.partition("=")
        if name not in CONFIG_NAMES or not size.isdigit():
            parser.error(f"--batch takes CONFIG=N with CONFIG in {CONFIG_NAMES}, got {item!r}")
        batch[name] = int(size)
    args.batch = batch
    if args.repeats < 1 or args.compile_repeats < 1:
        parser.error(
            f"--repeats and --compile-repeats take 1 or more, got {args.repeats} and {args.compile_repeats}"
        )
    unknown = set(args.torch_compile) - set(ARCHITECTURES) - {"all", "none"}
    if unknown:
        parser.error(f"--torch-compile: unknown architectures {sorted(unknown)}")
    args.torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = machine()
    date = datetime.date.today().isoformat()
    if args.out is None:
        device = "".join(c if c.isalnum() else "-" for c in info["device"]).strip("-").lower()
        args.out = Path(__file__).parent / "results" / f"{date}-{device}-{args.dtype}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = dict(
        dtype=args.dtype,
        repeats=args.repeats,
        compile_repeats=args.compile_repeats,
        min_seconds=args.min_seconds,
        batch=args.batch,
        scan=args.scan,
        remat=args.remat,
        attention_implementation=args.attention_implementation,
    )
    results: dict[str, Any] = dict(date=date, machine=info, settings=settings, results=[])
    work = [(a, c) for a in args.arch for c in args.configs if config(a, c) is not None]
    bar = tqdm(work, unit="model")
    for arch, name in bar:
        cfg, batch = config(arch, name), args.batch[name]
        record: dict[str, Any] = dict(arch=arch, config=name, batch=batch, image_size=cfg.image_size)
        bar.set_description(f"{arch} {name}")
        record.update(bench(cfg, batch, args))
        results["results"].append(record)
        bar.write(_summary(record))
        # write as we go: a long run that is stopped keeps what it measured
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
        args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    print(f"written: {args.out.with_suffix('.json')} and .md")
    return results


def _summary(record: dict[str, Any]) -> str:
    parts = [f"{record['arch']} {record['config']} (batch {record['batch']})"]
    for side in ("jax", "torch_eager", "torch_compile"):
        if side in record:
            r = record[side]
            parts.append(
                f"{side}: failed ({r['error'][:80]})"
                if "error" in r
                else f"{side}: infer {r['infer_images_per_s']:.1f} img/s, train {r['train_images_per_s']:.1f} img/s"
            )
    return "; ".join(parts)


if __name__ == "__main__":
    main()
