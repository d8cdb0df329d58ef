"""GPU check (issue 12): one command that measures the project's own code on a CUDA device.

    python -m benchmarks.gpu --device cuda --out gpu.json   # make bench-gpu; < 5 min on an H200
    python -m benchmarks.gpu --device cpu --quick           # the same code at tiny sizes (seconds)

Prints one JSON object, also written to --out after every section (a run stopped by a timeout
keeps what it measured). A failing section records {"error": ...}; the others still run.

  device         name, versions, the dense bf16 peak from PEAK_TFLOPS (None if not listed)
  matmul         measured bf16 n x n matmul rate: the practical ceiling for the step
  views          headsweep.views.two_views on uint8 batches already on the device, per recipe
  probes         headsweep.probes.fit_probes on class-structured random features (10 classes,
                 10k rows, taps of 512 and 128 dims)
  step           the [O] step: sweeps/ouyang_bottleneck.yaml's base (ResNet-18, simclr_cifar,
                 per-view forward, NT-Xent, LARS, bf16 autocast) + channels_last, on
                 headsweep.train's `_Trial`; FLOPs by FlopCounterMode. `model`: forward, loss,
                 backward, LARS on fixed views; `fwd_bwd`: without LARS; `epoch`:
                 `_Trial.train_epoch` as trials run it (views, per-step metrics)
  trial          one short real trial through headsweep.train.pretrain: its timings dict
  step_compiled  `step` under torch.compile (last: the slow part; on the CPU only if asked)

Images/s counts views (each view is one image through the encoder), as train/images_per_s does.
Nothing here is a GPU number until it was run on one: see BENCHMARKS.md, "GPU check".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from headsweep import metrics as M
from headsweep.atomic import write_text
from headsweep.config import ProbeConfig, TrialConfig
from headsweep.configtree import merge
from headsweep.data import Dataset, Split
from headsweep.losses import LOSSES
from headsweep.probes import fit_probes
from headsweep.train import _Trial, pretrain
from headsweep.views import two_views

SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "ouyang_bottleneck.yaml"
SECTIONS = ("device", "matmul", "views", "probes", "step", "trial", "step_compiled")
COMPILE_SKIPPED = (
    "CPU with --compile auto: inductor's C++ build of the step takes minutes on a small CPU and "
    "tells nothing about the GPU (--compile on forces it)"
)

# Dense bf16 tensor-core peaks (no 2:4 sparsity), TFLOPS, from NVIDIA's datasheets; matched
# against torch.cuda.get_device_name in order, first match wins. NVL cards and A10G run at other
# clocks than their namesakes and are left out: unknown devices report % of the measured matmul.
PEAK_TFLOPS: tuple[tuple[str, float | None], ...] = (
    (r"\bH[12]00 NVL\b", None),
    (r"\bH100 PCIe\b", 756.0),
    (r"\bH[12]00\b", 989.4),  # H100 SXM ("NVIDIA H100 80GB HBM3") and H200 SXM
    (r"\bA100\b", 312.0),  # SXM4 and PCIe
    (r"\bA10\b", 125.0),  # not A10G (word boundary)
)


@dataclass(frozen=True)
class Sizes:
    backbone: str = "resnet18"
    batches: tuple[int, ...] = (256, 512)  # step batches (pairs); [O] trains at 256
    steps: int = 20  # timed calls per window (after 2 warm-up calls)
    repeats: int = 3  # windows; the median is reported
    matmul_n: int = 8192
    views_batch: int = 512
    probe_rows: int = 10_000
    probe_taps: tuple[tuple[str, int], ...] = (("pre", 512), ("post", 128))
    probe_steps: int = ProbeConfig.steps  # L-BFGS iteration cap (the default protocol's)
    trial_n: int = 4096  # the trial's batch is batches[0]
    tiny_model: bool = False  # small widths and head: the seconds-long CPU run
    # torch threads (0: torch's default). The quick run's tiny ops are all thread hand-offs:
    # with 2 threads on a busy 2-core machine an L-BFGS probe of 300 rows took 4-10 s, with 1
    # thread 0.2 s.
    threads: int = 0


CUDA = Sizes()
# bf16 autocast is slow on this project's busy 2-core CPU (ResNet-18 ~1 image/s, the small CNN
# at batch 128 ~33 images/s, a 1024^2 bf16 matmul ~1.6 s): CPU runs check the logic with the
# small CNN; they are not a CPU benchmark (`make bench` is). --backbone resnet18 overrides.
CPU = Sizes("small_cnn", (64,), 3, 2, 512, 128, 1000, trial_n=256)
QUICK = Sizes("small_cnn", (16,), 2, 1, 256, 32, 300, (("pre", 32), ("post", 16)), 30, 128, True, 1)


def bf16_peak(name: str) -> float | None:
    for pattern, tflops in PEAK_TFLOPS:
        if re.search(pattern, name):
            return tflops
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, s: Sizes) -> dict[str, Any]:
    """Median and min seconds per call over `repeats` windows of `steps` calls, after warm-up;
    the device is synchronised at the end of each window only (calls queue as in training)."""
    for _ in range(2):
        fn()
    sync(device)
    runs = []
    for _ in range(s.repeats):
        start = time.perf_counter()
        for _ in range(s.steps):
            fn()
        sync(device)
        runs.append((time.perf_counter() - start) / s.steps)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs}


def random_images(n: int, device: torch.device, overlay: bool = False, seed: int = 0) -> Dataset:
    """uint8 CIFAR-sized images with a 10-class label (and a digit layer): the step's cost does
    not depend on pixel values, and no dataset has to be on the machine."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    digit = torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g)
    split = Split(
        x, {"object": torch.randint(0, 10, (n,), generator=g)}, digit if overlay else None
    )
    return Dataset("cifar10", "image", split, split, {"object": 10}).to(device)


def o_config(device: torch.device, s: Sizes, batch: int, **sections: Any) -> TrialConfig:
    """[O]'s recipe as the shipped spec's base has it, resized for this run."""
    base = yaml.safe_load(SPEC.read_text())["base"]
    model: dict[str, Any] = {"backbone": s.backbone}
    if s.tiny_model:
        model |= {"widths": [8, 16], "head": {"hidden": 32, "out": 16}}
    tree = merge(
        base,
        {
            "data": {"name": "cifar10", "download": False, "n_train": 0, "n_test": 0},
            "model": model,
            "train": {"batch_size": batch, "device": str(device), "precision": "bf16"},
            "probe": {"online_n": 0, "linear_eval": {"epochs": 0}},
        },
    )
    return TrialConfig.from_dict(merge(tree, sections))


def make_trial(cfg: TrialConfig, device: torch.device, n: int) -> _Trial:
    trial = _Trial(cfg, random_images(n, device), device)
    if not trial.channels_last:  # train.py chooses by device and config; [O]'s step uses it
        trial.model.to(memory_format=torch.channels_last)
        trial.channels_last = True
    return trial


def model_step(trial: _Trial, v1: torch.Tensor, v2: torch.Tensor, optimize: bool = True) -> None:
    """One training step on given views, as `_Trial.train_epoch` does it minus the views and
    the per-step metrics."""
    cfg = trial.cfg
    out1, out2 = trial.encode_views(v1, v2)["post"].float().chunk(2)
    loss = LOSSES[cfg.loss.name](out1, out2, None, cfg.loss)
    trial.state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if optimize:
        trial.state.optimizer.step()


def utilization(flops: float, seconds: float, ctx: dict[str, Any]) -> dict[str, Any]:
    rate = flops / seconds / 1e12
    ceilings = {"pct_peak": ctx.get("peak_tflops"), "pct_matmul": ctx.get("matmul_tflops")}
    return {"tflops": rate} | {k: 100 * rate / v if v else None for k, v in ceilings.items()}


# --------------------------------------------------------------------------- sections


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def section_device(device: torch.device, s: Sizes, ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "cpu": cpu_name()}
    out |= {"cuda_runtime": torch.version.cuda, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out |= {"name": p.name, "capability": f"{p.major}.{p.minor}"}
        out |= {
            "sms": p.multi_processor_count,
            "memory_gib": p.total_memory / 2**30,
            "bf16_peak_tflops": bf16_peak(p.name),
        }
        out["peak_source"] = "PEAK_TFLOPS, benchmarks/gpu.py: NVIDIA datasheets, dense"
        ctx["peak_tflops"] = out["bf16_peak_tflops"]
    return out


def section_matmul(device: torch.device, s: Sizes, ctx: dict[str, Any]) -> dict[str, Any]:
    n = s.matmul_n
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, torch.bfloat16) for _ in range(2))
    timing = seconds_per_call(lambda: a @ b, device, s)
    ctx["matmul_tflops"] = 2 * n**3 / timing["median_s"] / 1e12
    return {"n": n, "dtype": "bfloat16", "tflops": ctx["matmul_tflops"], **timing}


def section_views(device: torch.device, s: Sizes, ctx: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for recipe, overlay in (("simclr_cifar", False), ("sas_digits", True)):
        cfg = TrialConfig.from_dict({"data": {"name": "cifar10"}, "aug": {"recipe": recipe}})
        batch = random_images(s.views_batch, device, overlay).train
        g = torch.Generator(device).manual_seed(0)
        timing = seconds_per_call(partial(two_views, batch, cfg.aug, cfg.data, g), device, s)
        views = 2 * s.views_batch
        out[recipe] = {"batch": s.views_batch, "views_per_s": views / timing["median_s"], **timing}
    return out


def section_probes(device: torch.device, s: Sizes, ctx: dict[str, Any]) -> dict[str, Any]:
    """Class means plus noise, so L-BFGS meets a realistic problem (neither separable at once
    nor pure noise); the test split is a fifth of the training rows."""
    classes, g = 10, torch.Generator().manual_seed(0)

    def split(rows: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        y = torch.randint(0, classes, (rows,), generator=g)
        taps = {}
        for i, (tap, dim) in enumerate(s.probe_taps):
            means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(i))
            taps[tap] = (means[y] + 3 * torch.randn(rows, dim, generator=g)).to(device)
        return taps, y.to(device)

    (train, y), (test, y_test) = split(s.probe_rows), split(max(10, s.probe_rows // 5))
    cfg = ProbeConfig(steps=s.probe_steps)
    labels, test_labels = {"object": y}, {"object": y_test}
    # A small fit first: CUDA context, cuBLAS handles and kernels load outside the timing.
    small = {tap: x[:100] for tap, x in train.items()}
    fit_probes(small, test, {"object": y[:100]}, test_labels, {"object": classes}, cfg)
    sync(device)
    start = time.perf_counter()
    rows = fit_probes(train, test, labels, test_labels, {"object": classes}, cfg)
    sync(device)
    out: dict[str, Any] = {"seconds": time.perf_counter() - start, "rows": s.probe_rows}
    out["taps"] = {r.tap: {"dim": r.dim, "accuracy": r.accuracy} for r in rows}
    return out | {"classes": classes, "protocol": rows[0].protocol if rows else None}


def bench_step(
    device: torch.device, s: Sizes, ctx: dict[str, Any], batch: int, compile_backend: str = ""
) -> dict[str, Any]:
    cfg = o_config(device, s, batch)
    trial = make_trial(cfg, device, batch * s.steps)  # one `epoch` = `steps` steps
    g = torch.Generator(device).manual_seed(0)
    v1, v2 = two_views(trial.data.train.head(batch), cfg.aug, cfg.data, g)
    with FlopCounterMode(display=False) as counter:  # eager, before any compile
        model_step(trial, v1, v2, optimize=False)
    flops = counter.get_total_flops()
    out: dict[str, Any] = {"batch": batch, "images_per_step": 2 * batch, "flops_per_step": flops}
    out["gflops_per_image"] = flops / (2 * batch) / 1e9
    out["recipe"] = (
        f"{cfg.model.backbone}, forward {cfg.train.forward}, {cfg.loss.name}, {cfg.optim.name}, "
        f"{cfg.train.precision}, channels_last {trial.channels_last}"
    )
    if compile_backend:
        start = time.perf_counter()
        trial.model = torch.compile(trial.model, backend=compile_backend)  # type: ignore[assignment]
        model_step(trial, v1, v2)
        sync(device)
        out["compile_backend"] = compile_backend
        out["first_step_s"] = time.perf_counter() - start  # compile included
    for name, optimize in (("model", True), ("fwd_bwd", False)):
        timing = seconds_per_call(partial(model_step, trial, v1, v2, optimize), device, s)
        seconds = timing["median_s"]
        out[name] = {"images_per_s": 2 * batch / seconds, **timing}
        out[name] |= utilization(flops, seconds, ctx)
    out["optimizer_s"] = out["model"]["median_s"] - out["fwd_bwd"]["median_s"]
    trial.train_epoch()  # warm: the per-step metrics' kernels
    epoch = trial.train_epoch()
    per_step = epoch[M.EPOCH_TIME] / trial.steps_per_epoch
    out["epoch"] = {
        "images_per_s": epoch[M.THROUGHPUT],
        "steps": trial.steps_per_epoch,
        "step_s": per_step,
        **utilization(flops, per_step, ctx),
    }
    return out


def section_step(device: torch.device, s: Sizes, ctx: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for batch in s.batches:
        try:
            rows[str(batch)] = bench_step(device, s, ctx, batch)
        except Exception as exc:  # one batch size (e.g. out of memory) must not hide the others
            rows[str(batch)] = failure(exc)
    return rows


def section_step_compiled(device: torch.device, s: Sizes, ctx: dict[str, Any]) -> dict[str, Any]:
    if not ctx.get("compile_backend"):
        return {"skipped": ctx.get("compile_skipped", "--compile off")}
    batch = s.batches[0]
    return {str(batch): bench_step(device, s, ctx, batch, ctx["compile_backend"])}


def section_trial(device: torch.device, s: Sizes, ctx: dict[str, Any]) -> dict[str, Any]:
    """One epoch of [O]'s recipe on the offline digits_on_texture data (its resized crop may
    cut the digit, which matters for science, not for timing), online probe and one epoch of
    linear evaluation included, then the final probes."""
    cfg = o_config(
        device,
        s,
        s.batches[0],
        data={"name": "digits_on_texture", "n_train": s.trial_n, "n_test": s.trial_n // 4},
        train={"epochs": 1},
        optim={"warmup_epochs": 0},
        probe={
            "online_n": min(500, s.trial_n),
            "steps": s.probe_steps,
            "linear_eval": {"epochs": 1, "warmup_epochs": 0},
        },
    )
    result = pretrain(cfg)
    last = result.history[-1]
    out = {"timings": result.timings, "device": result.device, "probes": len(result.probes)}
    out |= {"n_train": s.trial_n, "batch": s.batches[0], "epoch_s": last[M.EPOCH_TIME]}
    return out | {"images_per_s": last[M.THROUGHPUT]}


SECTION_FNS = {name: globals()[f"section_{name}"] for name in SECTIONS}


def failure(exc: BaseException) -> dict[str, Any]:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # an out-of-memory section must not starve the next one
    lines = traceback.format_exception(exc)
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": "".join(lines[-6:])}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the logic in seconds")
    p.add_argument("--out", type=Path, help="also write the JSON here (after every section)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    p.add_argument("--backbone", help="override the step's backbone (default: per device)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="auto: CUDA")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    return p.parse_args(argv)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    device = torch.device(args.device)
    s = QUICK if args.quick else CUDA if device.type == "cuda" else CPU
    if args.backbone:
        s = replace(s, backbone=args.backbone)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--sections: unknown {unknown} (allowed: {', '.join(SECTIONS)})")
    ctx: dict[str, Any] = {}
    if args.compile == "on" or (args.compile == "auto" and device.type == "cuda"):
        ctx["compile_backend"] = args.compile_backend
    elif args.compile == "auto":
        ctx["compile_skipped"] = COMPILE_SKIPPED
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.gpu", *argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sizes": asdict(s),
    }
    if device.type == "cuda" and not torch.cuda.is_available():
        why = f"--device {args.device}: torch.cuda.is_available() is False"
        why += f" (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
        result |= {name: {"error": why} for name in sections}
        emit(result, args.out)
        return result
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    total = time.perf_counter()
    for name in sections:
        start = time.perf_counter()
        print(f"gpu check: {name} ...", file=sys.stderr, flush=True)
        try:
            result[name] = SECTION_FNS[name](device, s, ctx)
        except Exception as exc:
            result[name] = failure(exc)
        result[name]["seconds_total"] = time.perf_counter() - start
        emit(result, args.out, final=False)
    result["wall_s"] = time.perf_counter() - total
    torch.set_num_threads(threads)
    emit(result, args.out)
    return result


def emit(result: dict[str, Any], out: Path | None, final: bool = True) -> None:
    text = json.dumps(result, indent=1)
    if out is not None:
        write_text(out, text)
    if final:
        print(text)


def has_error(tree: object) -> bool:
    if isinstance(tree, dict):
        return "error" in tree or any(has_error(v) for v in tree.values())
    return False


def main(argv: list[str] | None = None) -> int:
    """Exit status 1 when any section (or one batch size of a step) recorded an error."""
    argv = sys.argv[1:] if argv is None else argv
    result = run(parse_args(argv), argv)
    return 1 if has_error(result) else 0


if __name__ == "__main__":
    sys.exit(main())
