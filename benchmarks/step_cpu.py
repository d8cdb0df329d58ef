"""The training step against the CPU's practical fp32 ceiling (issue 12, acceptance point 3).

    python -m benchmarks.step_cpu                        # estimated 6-10 min on 2 quiet cores
    python -m benchmarks.step_cpu --wait-load 0.3        # first wait (up to 10 min) for quiet
    python -m benchmarks.step_cpu --models grid_cnn      # without ResNet-18 (est. ~2 min)
    python -m benchmarks.step_cpu --threads 1            # a quickstart trial's 1 CPU
    python -m benchmarks.step_cpu --quick --out /tmp/s.json   # the logic at tiny sizes (< 1 min)

Acceptance point 3: the CPU-scale encoder's step (`grid_cnn` as sweeps/quickstart.yaml configures
it) >= 55% of the measured fp32 matmul rate at batch 512; ResNet-18 with the same recipe >= 85%.
Run it on a quiet machine: every measurement records the share of the CPU other processes used
meanwhile (`others_cpu`, from /proc, as benchmarks/run.py does) and the 1-minute load average;
trust rows whose others_cpu is near 0. A --quick run is a smoke test of the code, never a
measurement (tiny batches, one window).

What is timed
  matmul   torch.mm(a, b, out=c) on fp32 n x n matrices, n = 1024, 2048 (the default size) and
           4096, with the step's torch thread count; each window holds enough calls to last
           ~0.5 s (after 2 warm-up calls), the median of 5 windows is the rate. The ceiling is
           the best of the three medians (`ceiling_n` says which n gave it).
  step     the trial exactly as a quickstart trial builds it: sweeps/quickstart.yaml loaded by
           sweeps.spec.load_spec with overrides (train.batch_size, train.device cpu,
           data.n_test 100, and for resnet18 model.backbone), its base config (textures_v2,
           sas_digits views, grid_cnn widths [32, 64, 128, 128], mlp head preset sas, nt_xent,
           adam, precision auto = fp32 on the CPU, joint forward), on headsweep.train's
           `_Trial` with the channels_last choice that train.memory_format (auto) makes.
           FLOPs: torch.utils.flop_counter.FlopCounterMode over one forward of both views,
           loss and backward (the optimizer's elementwise work is not counted, as in
           benchmarks/gpu.py). Parts:
             model    benchmarks.gpu.model_step: forward of both fixed views (made once by
                      two_views, no augmentation in the timed part), NT-Xent, backward, Adam
             fwd_bwd  the same without the optimizer step
             epoch    `_Trial.train_epoch` as trials run it: the views of every step, the
                      scheduler, the per-step I2 metrics on every train.metrics_every-th step
                      (grid_cnn: the quickstart's 3,000 images, 5 steps at batch 512, 11 at
                      256; resnet18: one step, its metrics included, so its epoch overstates
                      the metrics' share)
           grid_cnn is measured at batch 512 and 256 (10 calls a window, 3 windows), resnet18
           at batch 512 (1 call a window, 2 windows: 3.4 TFLOP a step, so ~20-35 s a step
           at 100-170 GFLOP/s; estimated, not measured; --resnet-steps changes the calls).
  memory_format  grid_cnn only: the `model` part with train.memory_format channels_last and
           contiguous (two trials, same seed and views), windows interleaved so drift in the
           machine's load hits both alike; says which one the config's auto picks.

JSON fields (printed on stdout; written to --out, by default benchmarks/results/step_cpu.json,
after every section; --quick writes only with --out)
  command, started, quick, wall_s, spec (path), load_avg_start / load_avg_end (/proc/loadavg:
  1, 5, 15 min), machine (cpu, cores, torch, torch_threads: the thread count every part used),
  settings (matmul sizes), plans (the sizes per model), warning (present on --quick and when
  any measurement's others_cpu > 10%: "not a measurement: ...")
  matmul.sizes.<n>       n, dtype, steps (calls a window), median_s / min_s / runs_s (seconds per
                         call), gflops_per_s (2 n^3 / median_s), others_cpu, load_avg_1m
  matmul.ceiling_gflops_per_s, ceiling_n   the best median rate and its n
  matmul.default_n, default_gflops_per_s   n = 2048's rate, for reference
  step.<model>.<batch>   batch (pairs), views_per_step (2 x batch: one view = one image),
                         gflop_per_step, gflop_per_view, flops_by_op (GFLOP per aten op),
                         recipe (what ran), channels_last (the trial's layout), overrides
    .model / .fwd_bwd    images_per_s (views/s), median_s / min_s / runs_s (seconds per step),
                         gflops_per_s (gflop_per_step / median_s), pct_matmul
                         (100 x gflops_per_s / matmul.ceiling_gflops_per_s), others_cpu,
                         load_avg_1m
    .optimizer_s         model.median_s - fwd_bwd.median_s
    .epoch               images_per_s (median over timed epochs of train/images_per_s), steps
                         (per epoch), step_s (epoch seconds / steps), gflops_per_s, pct_matmul,
                         epochs (timed), others_cpu, load_avg_1m
    .memory_format       (grid_cnn) channels_last / contiguous: images_per_s, median_s, min_s,
                         runs_s, gflops_per_s, pct_matmul; channels_last_speedup (images/s
                         ratio), auto_picks (the layout train.memory_format auto gives),
                         auto_is_faster, others_cpu, load_avg_1m
  acceptance             per target (grid_cnn and resnet18 at batch 512): model, batch,
                         target_pct, pct_matmul (the `model` part's), met (None where the row
                         was not measured, e.g. --quick or --models without it)
A failing matmul (then no step runs), model or batch records {"error", "traceback"}; the exit
status is then 1. Other options: --batches 512,256 (every model), --resnet-steps N.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu import (
    Sizes,
    cpu_name,
    emit,
    failure,
    has_error,
    model_step,
    seconds_per_call,
    utilization,
)
from benchmarks.run import RESULTS, OthersCPU, wait_for_quiet
from headsweep import metrics as M
from headsweep.config import TrialConfig
from headsweep.data import Dataset, load_dataset
from headsweep.train import _Trial
from headsweep.views import two_views
from sweeps.spec import load_spec

SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"
CPU = torch.device("cpu")
OUT = RESULTS / "step_cpu.json"
# What each model changes in the quickstart's base (grid_cnn: nothing). small_cnn (not run by
# default) with its own default widths, as benchmarks/run.py's step measures it.
MODELS: dict[str, dict[str, Any]] = {
    "grid_cnn": {},
    "resnet18": {"model.backbone": "resnet18"},
    "small_cnn": {"model.backbone": "small_cnn", "model.widths": [32, 64, 128]},
}
TARGETS = {"grid_cnn": 55.0, "resnet18": 85.0}  # % of the matmul ceiling at batch 512
TARGET_BATCH = 512
NOISY = 0.10  # others_cpu above this: the row is not a measurement


@dataclass(frozen=True)
class Plan:
    """Sizes of one model's measurement."""

    batches: tuple[int, ...]
    steps: int  # calls per timed window (after 2 warm-up calls)
    repeats: int  # windows; the median is reported
    epoch_n: int = 0  # training images of the `epoch` part (0: the spec's data.n_train)
    epochs: int = 2  # timed epochs, after `warm_epochs`
    warm_epochs: int = 1
    memory_formats: bool = False  # channels_last vs contiguous


@dataclass(frozen=True)
class Settings:
    matmul_ns: tuple[int, ...] = (1024, 2048, 4096)
    matmul_default: int = 2048
    matmul_window_s: float = 0.5
    matmul_repeats: int = 5
    n_test: int = 100  # test images (not used by the step; generated with the data)


FULL_PLANS = {
    "grid_cnn": Plan((512, 256), 10, 3, memory_formats=True),
    "resnet18": Plan((512,), 1, 2, epoch_n=512, epochs=1, warm_epochs=0),
    "small_cnn": Plan((512, 256), 10, 3, memory_formats=True),
}
QUICK_PLANS = {
    "grid_cnn": Plan((32,), 1, 1, epoch_n=64, epochs=1, memory_formats=True),
    "resnet18": Plan((2,), 1, 1, epoch_n=2, epochs=1, warm_epochs=0),
    "small_cnn": Plan((32,), 1, 1, epoch_n=64, epochs=1, memory_formats=True),
}
FULL = Settings()
QUICK = Settings((128, 256), 256, 0.02, 2, 20)


# --------------------------------------------------------------------------- helpers


def load_record() -> dict[str, Any]:
    return {"load_avg_1m": os.getloadavg()[0]}


def cpu_record(cpu: OthersCPU) -> dict[str, Any]:
    return {"others_cpu": cpu.share} | load_record()


def rates(flops: float, seconds: float, views: int, ceiling_gflops: float) -> dict[str, Any]:
    """views/s, GFLOP/s and % of the matmul ceiling (benchmarks.gpu.utilization's pct_matmul)."""
    used = utilization(flops, seconds, {"matmul_tflops": ceiling_gflops / 1e3})
    return {
        "images_per_s": views / seconds,
        "gflops_per_s": used["tflops"] * 1e3,
        "pct_matmul": used["pct_matmul"],
    }


def trial_config(
    model: str, batch: int, s: Settings, n_train: int = 0, memory_format: str = ""
) -> tuple[TrialConfig, dict[str, Any]]:
    """The quickstart's base config through the project's own spec loader, resized."""
    overrides: dict[str, Any] = {
        "train.batch_size": batch,
        "train.device": "cpu",
        "data.n_test": s.n_test,
    }
    overrides |= MODELS[model]
    if n_train:
        overrides["data.n_train"] = n_train
    if memory_format:
        overrides["train.memory_format"] = memory_format
    cfg = load_spec(SPEC, overrides).settings({})
    if not isinstance(cfg, TrialConfig):
        raise TypeError(f"{SPEC.name}: expected a contrastive trial config, got {type(cfg)}")
    return cfg, overrides


def build_trial(cfg: TrialConfig, cache: dict[str, Dataset]) -> _Trial:
    """headsweep.train's trial object as `pretrain` builds it (seeded, data on the CPU). Not
    benchmarks.gpu.make_trial: that one forces channels_last, this keeps the config's choice."""
    key = repr(cfg.data)
    if key not in cache:
        cache[key] = load_dataset(cfg.data, CPU)
    torch.manual_seed(cfg.train.seed)
    return _Trial(cfg, cache[key], CPU)


def recipe(cfg: TrialConfig, trial: _Trial) -> str:
    m, head = cfg.model, cfg.model.head
    widths = f" widths {list(m.widths)}" if m.backbone != "resnet18" else ""
    precision = "bf16" if isinstance(trial.autocast, torch.autocast) else "fp32"
    return (
        f"{cfg.data.name}, {cfg.aug.recipe}, {m.backbone}{widths}, head {head.name} "
        f"(preset {head.preset}), {cfg.loss.name}, {cfg.optim.name}, precision "
        f"{cfg.train.precision} -> {precision}, forward {cfg.train.forward}, memory_format "
        f"{cfg.train.memory_format} -> channels_last {trial.channels_last}, metrics_every "
        f"{getattr(cfg.train, 'metrics_every', 1)}"  # 1: a tree without train.metrics_every
    )


def interleaved(fns: Mapping[str, Callable[[], object]], steps: int, repeats: int) -> Any:
    """seconds_per_call for several functions at once, their windows alternating (A B A B ...),
    so a change in the machine's load hits them alike; and the CPU accounting of all windows."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    with OthersCPU() as cpu:
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(steps):
                    fn()
                runs[name].append((time.perf_counter() - start) / steps)
    timings = {
        name: {"median_s": statistics.median(r), "min_s": min(r), "runs_s": r}
        for name, r in runs.items()
    }
    return timings, cpu


# --------------------------------------------------------------------------- sections


def bench_matmul(s: Settings) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    g = torch.Generator().manual_seed(0)
    for n in s.matmul_ns:
        a, b, c = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g), torch.empty(n, n)

        def mm(a: torch.Tensor = a, b: torch.Tensor = b, c: torch.Tensor = c) -> torch.Tensor:
            return torch.mm(a, b, out=c)

        mm()
        start = time.perf_counter()
        mm()
        steps = max(1, math.ceil(s.matmul_window_s / (time.perf_counter() - start)))
        with OthersCPU() as cpu:
            timing = seconds_per_call(mm, CPU, Sizes(steps=steps, repeats=s.matmul_repeats))
        sizes[str(n)] = {"n": n, "dtype": "float32", "steps": steps, **timing}
        sizes[str(n)] |= {"gflops_per_s": 2 * n**3 / timing["median_s"] / 1e9, **cpu_record(cpu)}
        del a, b, c
    best = max(sizes.values(), key=lambda r: r["gflops_per_s"])
    out: dict[str, Any] = {"sizes": sizes, "ceiling_gflops_per_s": best["gflops_per_s"]}
    out["ceiling_n"] = best["n"]
    default = sizes.get(str(s.matmul_default))
    out["default_n"] = s.matmul_default
    out["default_gflops_per_s"] = default["gflops_per_s"] if default else None
    return out


def bench_batch(
    model: str, batch: int, plan: Plan, s: Settings, ceiling: float, cache: dict[str, Dataset]
) -> dict[str, Any]:
    views = 2 * batch
    cfg, overrides = trial_config(model, batch, s, plan.epoch_n)
    trial = build_trial(cfg, cache)
    g = torch.Generator().manual_seed(0)
    v1, v2 = two_views(trial.data.train.head(batch), cfg.aug, cfg.data, g)
    with FlopCounterMode(display=False) as counter:
        model_step(trial, v1, v2, optimize=False)
    flops = counter.get_total_flops()
    by_op = counter.get_flop_counts().get("Global", {})
    out: dict[str, Any] = {"batch": batch, "views_per_step": views}
    out |= {"gflop_per_step": flops / 1e9, "gflop_per_view": flops / views / 1e9}
    out["flops_by_op"] = {str(op): n / 1e9 for op, n in by_op.items()}
    out |= {"recipe": recipe(cfg, trial), "channels_last": trial.channels_last}
    out["overrides"] = overrides
    sizes = Sizes(steps=plan.steps, repeats=plan.repeats)
    for part, optimize in (("model", True), ("fwd_bwd", False)):
        with OthersCPU() as cpu:
            timing = seconds_per_call(partial(model_step, trial, v1, v2, optimize), CPU, sizes)
        out[part] = rates(flops, timing["median_s"], views, ceiling) | timing | cpu_record(cpu)
    out["optimizer_s"] = out["model"]["median_s"] - out["fwd_bwd"]["median_s"]
    for _ in range(plan.warm_epochs):
        trial.train_epoch()
    with OthersCPU() as cpu:
        epochs = [trial.train_epoch() for _ in range(plan.epochs)]
    step_s = statistics.median(e[M.EPOCH_TIME] for e in epochs) / trial.steps_per_epoch
    out["epoch"] = {
        **rates(flops, step_s, views, ceiling),
        "images_per_s": statistics.median(e[M.THROUGHPUT] for e in epochs),
        "steps": trial.steps_per_epoch,
        "step_s": step_s,
        "epochs": plan.epochs,
        **cpu_record(cpu),
    }
    if plan.memory_formats:
        out["memory_format"] = bench_memory_format(model, batch, plan, s, ceiling, cache, flops)
    return out


def bench_memory_format(
    model: str,
    batch: int,
    plan: Plan,
    s: Settings,
    ceiling: float,
    cache: dict[str, Dataset],
    flops: float,
) -> dict[str, Any]:
    """The `model` part with each layout (same seed, same views), windows interleaved."""
    layouts = ("channels_last", "contiguous")
    trials = {
        m: build_trial(trial_config(model, batch, s, plan.epoch_n, m)[0], cache) for m in layouts
    }
    auto = build_trial(trial_config(model, batch, s, plan.epoch_n, "auto")[0], cache)
    first = trials["channels_last"]
    g = torch.Generator().manual_seed(0)
    v1, v2 = two_views(first.data.train.head(batch), first.cfg.aug, first.cfg.data, g)
    fns = {m: partial(model_step, t, v1, v2, True) for m, t in trials.items()}
    timings, cpu = interleaved(fns, plan.steps, plan.repeats)
    out: dict[str, Any] = {
        m: rates(flops, t["median_s"], 2 * batch, ceiling) | t for m, t in timings.items()
    }
    out["channels_last_speedup"] = (
        out["channels_last"]["images_per_s"] / out["contiguous"]["images_per_s"]
    )
    out["auto_picks"] = "channels_last" if auto.channels_last else "contiguous"
    other = "contiguous" if auto.channels_last else "channels_last"
    out["auto_is_faster"] = out[out["auto_picks"]]["images_per_s"] >= out[other]["images_per_s"]
    return out | cpu_record(cpu)


def acceptance(step: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model, target in TARGETS.items():
        row = step.get(model, {}).get(str(TARGET_BATCH), {})
        pct = row.get("model", {}).get("pct_matmul") if isinstance(row, dict) else None
        rows.append(
            {
                "model": model,
                "batch": TARGET_BATCH,
                "part": "model",
                "target_pct": target,
                "pct_matmul": pct,
                "met": None if pct is None else pct >= target,
            }
        )
    return rows


def noisy(tree: object) -> list[float]:
    """Every others_cpu in the result above NOISY."""
    if isinstance(tree, dict):
        found = [v for k, v in tree.items() if k == "others_cpu" and v is not None and v > NOISY]
        return found + [x for v in tree.values() for x in noisy(v)]
    return []


# --------------------------------------------------------------------------- command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.step_cpu", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the logic (< 1 min)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--models",
        default="grid_cnn,resnet18",
        help=f"comma-separated subset of {', '.join(MODELS)} (default grid_cnn,resnet18)",
    )
    p.add_argument("--batches", help="override the step batches, e.g. 512 or 512,256")
    p.add_argument("--resnet-steps", type=int, help="resnet18's calls per window (default 1)")
    p.add_argument(
        "--out",
        type=Path,
        help=f"JSON file (default {OUT.relative_to(RESULTS.parents[1])}; --quick: none)",
    )
    p.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        help="first wait (up to 10 min) for the 1-min load average to drop below this",
    )
    return p.parse_args(argv)


def plans_for(args: argparse.Namespace) -> dict[str, Plan]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown} (allowed: {', '.join(MODELS)})")
    table = QUICK_PLANS if args.quick else FULL_PLANS
    plans = {m: table[m] for m in models}
    if args.batches:
        batches = tuple(int(b) for b in args.batches.split(","))
        plans = {m: replace(p, batches=batches) for m, p in plans.items()}
    if args.resnet_steps and "resnet18" in plans:
        plans["resnet18"] = replace(plans["resnet18"], steps=args.resnet_steps)
    return plans


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    s = QUICK if args.quick else FULL
    plans = plans_for(args)
    out = args.out if args.out or args.quick else OUT
    if args.wait_load:
        wait_for_quiet(args.wait_load, timeout=600)
    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.step_cpu", *argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "spec": str(SPEC.relative_to(SPEC.parents[1])),
        "load_avg_start": list(os.getloadavg()),
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "settings": asdict(s),
        "plans": {m: asdict(p) for m, p in plans.items()},
    }
    start = time.perf_counter()
    try:
        print("step_cpu: matmul ...", file=sys.stderr, flush=True)
        try:
            result["matmul"] = bench_matmul(s)
        except Exception as exc:
            result["matmul"] = failure(exc)  # no ceiling: nothing to compare the step with
        emit(result, out, final=False)
        ceiling = result["matmul"].get("ceiling_gflops_per_s")
        result["step"] = {}
        cache: dict[str, Dataset] = {}
        for model, plan in plans.items() if ceiling else ():
            rows: dict[str, Any] = {}
            result["step"][model] = rows
            for batch in plan.batches:
                print(f"step_cpu: {model} batch {batch} ...", file=sys.stderr, flush=True)
                try:
                    rows[str(batch)] = bench_batch(model, batch, plan, s, ceiling, cache)
                except Exception as exc:  # one model or batch must not hide the others
                    rows[str(batch)] = failure(exc)
                emit(result, out, final=False)
    finally:
        torch.set_num_threads(before)
    result["acceptance"] = acceptance(result.get("step", {}))
    result["load_avg_end"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - start
    shares = noisy(result)
    if shares or args.quick:
        why = ["--quick: tiny sizes, a smoke run"] if args.quick else []
        if shares:
            why.append(f"other processes used up to {100 * max(shares):.0f}% of the CPU")
        result["warning"] = "not a measurement: " + "; ".join(why)
    emit(result, out)
    summarize(result)
    return result


def summarize(result: dict[str, Any]) -> None:
    """A few lines on stderr (the JSON on stdout is the record)."""
    mm = result.get("matmul", {})
    lines = []
    if "ceiling_gflops_per_s" in mm:
        lines.append(
            f"fp32 matmul ceiling {mm['ceiling_gflops_per_s']:.1f} GFLOP/s (n = "
            f"{mm['ceiling_n']}; n = {mm['default_n']}: {mm['default_gflops_per_s'] or 0:.1f})"
        )
    for model, rows in result.get("step", {}).items():
        for batch, row in rows.items():
            if "error" in row:
                lines.append(f"{model} batch {batch}: {row['error']}")
                continue
            parts = ", ".join(
                f"{p} {row[p]['images_per_s']:,.0f} views/s {row[p]['pct_matmul']:.0f}%"
                for p in ("model", "fwd_bwd", "epoch")
            )
            lines.append(f"{model} batch {batch} ({row['gflop_per_step']:.1f} GFLOP): {parts}")
            if "memory_format" in row:
                mf = row["memory_format"]
                lines.append(
                    f"  channels_last / contiguous: {mf['channels_last_speedup']:.2f}x "
                    f"(auto picks {mf['auto_picks']})"
                )
    for a in result.get("acceptance", []):
        lines.append(
            f"acceptance {a['model']} batch {a['batch']}: {a['pct_matmul']} % vs "
            f"{a['target_pct']} % -> met {a['met']}"
        )
    if "warning" in result:
        lines.append(result["warning"])
    print("\n".join(lines), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Exit status 1 when anything recorded an error."""
    argv = sys.argv[1:] if argv is None else argv
    result = run(parse_args(argv), argv)
    return 1 if has_error(result) else 0


if __name__ == "__main__":
    sys.exit(main())
