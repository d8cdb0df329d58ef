"""What each experiment costs at GPU scale, the papers' recipe as the specs write it (the spec's
base config and its GPU profiles): estimated, not run. REPRODUCTION.md shows the table.

The estimate counts the images each trial sends through the encoder and divides by a rate
measured on a real GPU by `benchmarks/gpu.py` (the committed `GPU_RESULTS`):

- pretraining: epochs x training images x 2 views, forward and backward;
- linear evaluation ([O]'s protocol): epochs x training images, forward only, counted as a third
  of a forward-and-backward view (the backward pass costs about twice the forward);
- untrained controls (`train.epochs` 0) and the frozen-feature probes: seconds, not counted.

Rates, per view (one image through the step):
- H100: the H200's measured `_Trial.train_epoch` rate at the trial's batch size ([O]'s step:
  ResNet-18, per-view forward, LARS, bf16, channels_last). The H100 SXM has the same dense bf16
  peak (989 TFLOPS), and at these batch sizes the step is bound by kernel launches and host
  work, not by the H200's larger memory (a step at batch 512 took as long as one at 256), so
  the H100 is expected to run at the same rate. Xue's steps (joint forward, Adam) are costed at
  the same measured rate: not measured on their own.
- A10G: not measured. Its time is the measured FLOPs per view over an assumed sustained rate:
  `A10G_PEAK_TFLOPS` (the A10's dense bf16 datasheet figure; the A10G is AWS's variant of the
  same GA102 part) x `A10G_UTILISATION` (the step at batch 512 sustained 17.5% of the H200's
  measured matmul rate while launch-bound; a smaller GPU is closer to compute-bound, so a
  larger fraction of its smaller peak is assumed).

FLOPs per view are `FlopCounterMode`'s for ResNet-18 at 32x32; larger images scale with the
pixel count. Backbones other than ResNet-18 are not costed (no measured FLOPs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headsweep.config import TrialConfig
from sweeps.overrides import apply_profiles
from sweeps.spec import SweepSpec, parse_spec
from sweeps.specfile import read_spec_file

REPOSITORY = Path(__file__).resolve().parents[1]
GPU_RESULTS = Path("benchmarks/results/gpu-h200-2026-11-29.json")
SPECS = (
    "xue_digits",
    "xue_reweight",
    "xue_coarse_fine",
    "xue_spurious",
    "ouyang_bottleneck",
    "ouyang_search",
)
# Training images when data.n_train is 0 (the whole split).
FULL_TRAIN = {
    "cifar10": 50_000,
    "cifar100": 50_000,
    "mnist_on_cifar10": 50_000,
    "digits_on_texture": 50_000,
    "textures_v2": 50_000,
    "waterbirds": 4_795,
}
FORWARD_SHARE = 1 / 3  # a forward-only view against a forward-and-backward one
A10G_PEAK_TFLOPS = 125.0
A10G_UTILISATION = 0.35


@dataclass(frozen=True)
class GpuEstimate:
    spec: str  # e.g. "xue_digits.yaml --profile strength"
    command: str
    trials: int
    views: float  # forward-and-backward views over all trials (linear evaluation included)
    pflop: float
    h100_hours: float
    a10g_hours: float
    note: str = ""


@dataclass(frozen=True)
class Rates:
    """The measured step: views/s per batch size and FLOPs per 32x32 view."""

    views_per_s: dict[int, float]
    gflop_per_view: float
    source: str

    @classmethod
    def read(cls, path: Path = GPU_RESULTS) -> Rates:
        raw = json.loads((REPOSITORY / path).read_text())
        steps = raw["step"]
        measured = [s for s in steps.values() if isinstance(s, dict) and "epoch" in s]
        rates = {int(s["batch"]): float(s["epoch"]["images_per_s"]) for s in measured}
        gflop = float(measured[0]["gflops_per_image"])
        return cls(rates, gflop, f"{raw['device']['name']}, {path}")

    def at(self, batch: int) -> float:
        """The rate measured at the batch size closest to `batch`."""
        return self.views_per_s[min(self.views_per_s, key=lambda b: abs(b - batch))]


def gpu_profiles(raw: dict[str, Any]) -> list[str]:
    """The spec's profiles that keep the GPU scale (names without `cpu` and not `smoke`)."""
    return [p for p in raw.get("profiles") or {} if "cpu" not in p and p != "smoke"]


def _trial_views(cfg: TrialConfig) -> tuple[float, float, int]:
    """(forward-and-backward views, equivalent FLOPs scale for the image size, batch size)."""
    n = cfg.data.n_train or FULL_TRAIN[cfg.data.name]
    pretrain = cfg.train.epochs * n * 2
    linear = cfg.probe.linear_eval.epochs * n * FORWARD_SHARE if cfg.train.epochs else 0.0
    pixels = (cfg.data.image_size / 32) ** 2 if cfg.data.name == "waterbirds" else 1.0
    return pretrain + linear, pixels, cfg.train.batch_size


def estimate(spec: SweepSpec, label: str, command: str, rates: Rates) -> GpuEstimate:
    trials = spec.num_trials()
    points = list(spec.points()) if spec.search.algorithm == "grid" else [{}] * trials
    views = flop = hours = 0.0
    backbones = set()
    for point in points:
        cfg = spec.settings(point)
        assert isinstance(cfg, TrialConfig), "image trainables only (the synthetic ones run here)"
        backbones.add(cfg.model.backbone)
        v, pixels, batch = _trial_views(cfg)
        views += v
        flop += v * pixels * rates.gflop_per_view * 1e9
        hours += v * pixels / rates.at(batch) / 3600
    if backbones != {"resnet18"}:
        note = f"not costed: backbone {', '.join(sorted(backbones))} has no measured FLOPs"
        return GpuEstimate(label, command, trials, views, 0.0, 0.0, 0.0, note)
    a10g = flop / (A10G_PEAK_TFLOPS * 1e12 * A10G_UTILISATION) / 3600
    return GpuEstimate(label, command, trials, views, flop / 1e15, hours, a10g)


def estimates(rates: Rates | None = None) -> list[GpuEstimate]:
    """Every GPU-scale configuration of the shipped specs, in `SPECS` order."""
    rates = rates or Rates.read()
    out = []
    for name in SPECS:
        path = f"sweeps/{name}.yaml"
        raw = read_spec_file(REPOSITORY / path)
        for profile in [None, *gpu_profiles(raw)]:
            profiles = [profile] if profile else []
            spec = parse_spec(apply_profiles(raw, profiles), {}, cwd=REPOSITORY)
            flags = "".join(f" --profile {p}" for p in profiles)
            label = f"{name}.yaml{flags}"
            command = f"headsweep run {path}{flags} --name {name}{'_' + profile if profile else ''}"
            out.append(estimate(spec, label, command, rates))
    return out


def markdown(rows: list[GpuEstimate], rates: Rates) -> list[str]:
    """The report's table, with the assumptions it rests on."""
    measured = ", ".join(
        f"{v:,.0f} views/s at batch {b}" for b, v in sorted(rates.views_per_s.items())
    )
    lines = [
        "Not run here (no GPU for hours in this project); estimated by `sweeps/gpu_cost.py` from "
        f"the step measured on an {rates.source} ({measured}; "
        f"{rates.gflop_per_view:.2f} GFLOP per 32x32 view, forward and backward). H100: that "
        "measured rate (same dense bf16 peak; the step is launch-bound at these batches). "
        f"A10G: the FLOPs at an assumed {A10G_UTILISATION:.0%} of {A10G_PEAK_TFLOPS:g} TFLOPS "
        "(not measured). Linear evaluation counted as forward-only views; probes and data "
        "loading not counted. GPU-hours are for the whole sweep (all trials, one GPU each).",
        "",
        "| spec | trials | views (10⁹) | PFLOP | H100 GPU-hours (est.) | A10G GPU-hours (est.) | "
        "command |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.note:
            lines.append(f"| {r.spec} | {r.trials} | {r.views / 1e9:.2f} | – | – | – | {r.note} |")
            continue
        lines.append(
            f"| {r.spec} | {r.trials} | {r.views / 1e9:.2f} | {r.pflop:,.0f} | "
            f"{r.h100_hours:,.1f} | {r.a10g_hours:,.1f} | `{r.command}` |"
        )
    return lines


def table() -> list[str]:
    rates = Rates.read()
    return markdown(estimates(rates), rates)
