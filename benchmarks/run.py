"""Two-view augmentation speed: headsweep's batched pipeline against the papers' reference.

    python -m benchmarks.run            # make bench; ~3-4 min on 2 CPU cores
    python -m benchmarks.run --quick    # smoke run, a few seconds of timing
    python -m benchmarks.run --wait-load 0.3   # first wait for a quiet machine (up to 10 min)
    python -m benchmarks.run --section simclr  # only the simclr_cifar comparison

One process measures two sections on the same data (`digits_on_texture`, the digit composed in
every pipeline, p_drop 0.5).

Section `sas` (recipe `sas_digits` with pad-and-crop 4: flip 0.5, colour jitter
(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, normalize):

  reference   torchvision per-sample transforms on PIL images (RandomCrop(32, padding=4),
              RandomHorizontalFlip, RandomApply(ColorJitter), RandomGrayscale, ToTensor,
              Normalize), two views per sample, in a DataLoader with 2 persistent workers
              (warmed up before timing), batch 512: the SimCLR/SAS code's pipeline.
  batched     headsweep.views.two_views on uint8 batches taken from the in-memory split, as
              headsweep.train does, with 2 torch threads (and 1 thread, for reference).
  step        the real pretraining loop (headsweep.train's `_Trial.train_epoch`: views, small_cnn
              forward and backward, NT-Xent, Adam step, per-step metrics), fed by the batched
              views and, with `two_views` swapped for the reference loader, by the reference.

Section `simclr` (recipe `simclr_cifar`, [O]'s SimCLR CIFAR views: RandomResizedCrop(32,
(0.08, 1), bicubic), ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8, grayscale 0.2, Gaussian blur
sigma U(0.1, 2) p 0.5, flip 0.5, normalize), side by side:

  reference   the same DataLoader as above with solo-learn's per-sample transforms on PIL
              images (its blur: PIL ImageFilter.GaussianBlur(radius=sigma)).
  batched     headsweep.views.two_views, 2 threads and 1 thread.
  kornia      kornia.augmentation.AugmentationSequential (per-sample parameters) on the composed
              float batch of 2B views, 2 threads; both of its crop modes.
  v2 batch    torchvision.transforms.v2.Compose called on the composed float batch: it draws ONE
              parameter set per call and applies it to every view of the batch, so its views
              are not per-sample augmentations (measured only to show what it would cost).

Every figure is a median over repeats of a timed window (throughput = views / wall seconds).
Other processes on a 2-core machine change the numbers a lot (with 2 torch threads, a busy
second core can slow the batched pipeline 10-30x), so each measurement records the share of the
CPU that other processes used meanwhile ("others' CPU", from /proc) next to the load average:
trust rows where it is near 0%. Results: a table on stdout, benchmarks/results/latest.json and
latest.md; BENCHMARKS.md has the recorded runs and what differs between the pipelines.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, RandomSampler

from benchmarks.proc import busy_ticks, tree_ticks
from headsweep import train as train_module
from headsweep.config import AugConfig, TrialConfig
from headsweep.data import Dataset, Split, load_dataset
from headsweep.views import SIGMA, compose, stats, two_views

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("sas", "simclr")


@dataclass(frozen=True)
class Settings:
    batch: int = 512
    repeats: int = 7
    ref_window: int = 6  # reference batches per timed window (rounded up to whole rounds)
    batched_window: int = 10  # batched-pipeline batches per timed window
    step_batches: int = 4  # steps per timed epoch of the pretraining loop
    workers: int = 2
    threads: int = 2
    n_train: int = 8192


QUICK = Settings(batch=256, repeats=2, ref_window=2, batched_window=3, step_batches=2, n_train=2048)


def trial_config(s: Settings, recipe: str = "sas_digits") -> TrialConfig:
    """The benchmarked recipe: `sas_digits` (docs/science.md §4.2) + the CIFAR pad-and-crop 4 (the
    recipe of the earlier runs in BENCHMARKS.md), or a named recipe as it is."""
    aug: dict[str, Any] = {"recipe": recipe, "p_drop": 0.5}
    if recipe == "sas_digits":
        aug |= {"view1": {"crop_pad": 4}, "view2": {"crop_pad": 4}}
    return TrialConfig.from_dict(
        {
            "data": {"name": "digits_on_texture", "n_train": s.n_train, "n_test": s.batch},
            "aug": aug,
            "model": {"backbone": "small_cnn"},
            "train": {"batch_size": s.batch, "threads": s.threads, "device": "cpu", "epochs": 1000},
            "probe": {"online_n": 0},
        }
    )


# --------------------------------------------------------------------------- reference


class PILGaussianBlur:
    """solo-learn's blur: PIL's GaussianBlur with radius sigma ~ U(0.1, 2.0)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        sigma = float(torch.empty(1).uniform_(*SIGMA))
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def reference_transform(view: Any, size: int, data: Any) -> T.Compose:
    """torchvision's per-sample recipe for one view (a ViewConfig), in solo-learn's order."""
    if view.resized_crop:
        scale = (view.crop_min_scale, view.crop_max_scale)
        bicubic = T.InterpolationMode.BICUBIC
        ops: list[Any] = [T.RandomResizedCrop(size, scale=scale, interpolation=bicubic)]
    else:
        ops = [T.RandomCrop(size, padding=view.crop_pad)] if view.crop_pad else []
    if view.color_jitter_prob:
        ops.append(T.RandomApply([T.ColorJitter(*view.jitter)], p=view.color_jitter_prob))
    if view.gray_scale_prob:
        ops.append(T.RandomGrayscale(view.gray_scale_prob))
    if view.gaussian_prob:
        ops.append(T.RandomApply([PILGaussianBlur()], p=view.gaussian_prob))
    if view.solarization_prob:
        ops.append(T.RandomSolarize(128, p=view.solarization_prob))
    ops.append(T.RandomHorizontalFlip(view.horizontal_flip_prob))
    ops += [T.ToTensor(), T.Normalize(*stats(data))]
    return T.Compose(ops)


class ReferenceViews(torch.utils.data.Dataset):
    """Sample i -> (view 1, view 2), float (3, H, W) each: the digit composed per view in numpy
    (x = (1 - s m) C + s m D, rounded to uint8 for PIL; with probability p_drop one view at
    random keeps the object alone), then view k's torchvision transform on the PIL image."""

    def __init__(self, split: Split, aug: AugConfig, data: Any) -> None:
        self.objects = split.inputs.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3)
        self.digits = (
            None
            if split.overlay is None
            else split.overlay.permute(0, 2, 3, 1).contiguous().numpy()
        )
        self.p_drop, self.strength, self.soft_mask = aug.p_drop, data.strength, data.soft_mask
        size = self.objects.shape[1]
        self.transforms = [reference_transform(v, size, data) for v in aug.views]

    def __len__(self) -> int:
        return len(self.objects)

    def _compose(self, i: int, keep: bool) -> np.ndarray:
        c = self.objects[i]
        if not keep or self.digits is None or self.strength == 0:
            return c
        d = self.digits[i].astype(np.float32)
        w = self.strength * (d / 255 if self.soft_mask else (d > 0))
        return np.rint(c * (1 - w) + w * d).astype(np.uint8)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # torch's RNG: DataLoader seeds it per worker (numpy's would repeat across workers).
        drop, first = (torch.rand(2) < torch.tensor([self.p_drop, 0.5])).tolist()
        views = [
            tf(Image.fromarray(self._compose(i, not (drop and first == (v == 0)))))
            for v, tf in enumerate(self.transforms)
        ]
        return views[0], views[1]


def reference_loader(split: Split, cfg: TrialConfig, s: Settings) -> DataLoader:
    views = ReferenceViews(split, cfg.aug, cfg.data)
    # Sampling with replacement: one endless epoch, so timing never hits an epoch boundary.
    sampler = RandomSampler(views, replacement=True, num_samples=10**9)
    return DataLoader(
        views,
        batch_size=s.batch,
        sampler=sampler,
        num_workers=s.workers,
        persistent_workers=True,
        drop_last=True,
    )


# --------------------------------------------------------------------------- timing


def windows(
    fn: Callable[[], Any], calls: int, repeats: int, warmup: int
) -> tuple[list[float], OthersCPU]:
    """Wall seconds of `repeats` back-to-back windows of `calls` calls, after `warmup` calls,
    and the CPU accounting of those windows (see OthersCPU)."""
    for _ in range(warmup):
        fn()
    out = []
    with OthersCPU() as others:
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append(time.perf_counter() - start)
    return out, others


class OthersCPU:
    """Share of the machine's CPU that other processes used during a `with` block (0 = the
    machine was ours, 0.5 = one of two cores busy elsewhere): the system's busy clock ticks
    (/proc/stat, steal included) minus those of this process and its children. The load
    average cannot tell the two apart while our own workers run. None where /proc is missing."""

    share: float | None = None
    own_seconds: float | None = None  # CPU seconds of this process and its children

    def _snapshot(self) -> tuple[float, int, int]:
        busy = busy_ticks()
        own = sum(tree_ticks(os.getpid()).values())  # a child may exit in between: left out
        return time.perf_counter(), busy, own

    def __enter__(self) -> OthersCPU:
        try:
            self.start: tuple[float, int, int] | None = self._snapshot()
        except OSError:
            self.start = None
        return self

    def __exit__(self, *_: object) -> None:
        if self.start is None:
            return
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._snapshot()
        tick = os.sysconf("SC_CLK_TCK")
        capacity = (t1 - t0) * tick * (os.cpu_count() or 1)
        self.share = max(0.0, ((busy1 - busy0) - (own1 - own0)) / capacity)
        self.own_seconds = (own1 - own0) / tick


def summary(rates: list[float], views: int, cpu: OthersCPU) -> dict[str, Any]:
    """Rates (views/s per window) of a measurement of `views` views in all."""
    own = cpu.own_seconds
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": rates,
        # Views per CPU-second this process and its workers used: the pipeline's cost, which
        # (unlike views/s) does not depend on how much CPU other processes leave over.
        "views_per_cpu_s": views / own if own else None,
        "others_cpu": cpu.share,
        "load_avg_1m": os.getloadavg()[0],
    }


def channel_stats(v: torch.Tensor) -> dict[str, list[float]]:
    """Per-channel mean and std of a batch of views: the pipelines should agree roughly."""
    return {"mean": v.mean((0, 2, 3)).tolist(), "std": v.std((0, 2, 3)).tolist()}


def bench_reference(data: Dataset, cfg: TrialConfig, s: Settings) -> dict[str, Any]:
    loader = reference_loader(data.train, cfg, s)
    it = iter(loader)
    v1, v2 = next(it)  # starts the workers
    stats_ = channel_stats(torch.cat([v1, v2]))
    # The workers finish their batches at nearly the same moment, so a window is a whole number
    # of rounds (one batch per worker); otherwise it could time a batch that was already
    # waiting. Warm-up: two rounds, after which the main process waits on production.
    calls = -(-s.ref_window // s.workers) * s.workers
    seconds, cpu = windows(it.__next__, calls, s.repeats, warmup=2 * s.workers)
    views = 2 * s.batch * calls
    result = summary([views / t for t in seconds], views * s.repeats, cpu)
    del it, loader
    gc.collect()  # shuts the workers down before anything else is timed
    return {**result, "views": stats_}


def batch_stream(split: Split, batch: int, g: torch.Generator) -> Iterator[Split]:
    """Random batches as headsweep.train takes them (an epoch's permutation, then `take`)."""
    while True:
        order = torch.randperm(len(split), generator=g)
        for i in range(len(split) // batch):
            yield split.take(order[i * batch : (i + 1) * batch])


def bench_views(
    data: Dataset,
    s: Settings,
    threads: int,
    make: Callable[[Split, torch.Generator], torch.Tensor | tuple[torch.Tensor, ...]],
) -> dict[str, Any]:
    """Throughput of a batched view maker `make(batch, g)` (2B views per call) with `threads`
    torch threads, on batches taken as headsweep.train takes them."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        batches = batch_stream(data.train, s.batch, g)
        first = make(next(batches), g)
        stats_ = channel_stats(torch.cat(first) if isinstance(first, tuple) else first)
        seconds, cpu = windows(
            lambda: make(next(batches), g), s.batched_window, s.repeats, warmup=3
        )
    finally:
        torch.set_num_threads(before)
    views = 2 * s.batch * s.batched_window
    return {**summary([views / t for t in seconds], views * s.repeats, cpu), "views": stats_}


def bench_batched(data: Dataset, cfg: TrialConfig, s: Settings, threads: int) -> dict[str, Any]:
    return bench_views(data, s, threads, lambda b, g: two_views(b, cfg.aug, cfg.data, g))


def _trial(data: Dataset, cfg: TrialConfig, s: Settings) -> Any:
    """headsweep.train's own trial object on an epoch of `step_batches` steps."""
    n = s.step_batches * s.batch
    short = Dataset(data.name, data.kind, data.train.head(n), data.test, data.classes)
    return train_module._Trial(cfg, short, torch.device("cpu"))


def _epochs(trial: Any, s: Settings) -> dict[str, Any]:
    trial.train_epoch()  # warm-up: allocator, autograd graph, workers' first batches
    with OthersCPU() as cpu:
        rates = [trial.train_epoch()["train/images_per_s"] for _ in range(s.repeats)]
    return summary(rates, 2 * s.batch * s.step_batches * s.repeats, cpu)


def bench_step(data: Dataset, cfg: TrialConfig, s: Settings, feed: str) -> dict[str, Any]:
    """Pretraining throughput (views/s through views + forward + backward + step)."""
    torch.manual_seed(0)
    trial = _trial(data, cfg, s)
    if feed == "batched":
        return _epochs(trial, s)
    # The same loop, its two_views call answered by the reference loader.
    running = {"it": iter(reference_loader(data.train, cfg, s))}

    def from_loader(*_: Any) -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = next(running["it"])
        return v1, v2

    with mock.patch.object(train_module, "two_views", from_loader):
        result = _epochs(trial, s)
    running.clear()
    gc.collect()  # the iterator's last reference: its workers shut down
    return result


# --------------------------------------------------------------------------- other libraries


def composed_pairs(batch: Split, cfg: TrialConfig, g: torch.Generator) -> torch.Tensor:
    """Both views' float inputs (2B, 3, H, W) in [0, 1], the digit composed and dropped as
    headsweep does (the libraries below start from here; their time includes this step)."""
    from headsweep.views import digit_keep

    keep1, keep2 = digit_keep(len(batch), cfg.aug.p_drop, g, batch.inputs.device)
    images = torch.cat([batch.inputs, batch.inputs])
    overlay = None if batch.overlay is None else torch.cat([batch.overlay, batch.overlay])
    keep = torch.cat([keep1, keep2])
    return compose(images, overlay, keep, cfg.data.strength, cfg.data.soft_mask)


def kornia_pipeline(cfg: TrialConfig, size: int, cropping_mode: str) -> Any:
    """kornia.augmentation's per-sample version of view 1's recipe (both views of simclr_cifar
    are the same), or None where kornia is not installed (pip install -e '.[bench]')."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    view = cfg.aug.view1
    ops: list[Any] = []
    if view.resized_crop:
        scale = (view.crop_min_scale, view.crop_max_scale)
        ops.append(
            K.RandomResizedCrop(
                (size, size), scale=scale, resample="BICUBIC", cropping_mode=cropping_mode
            )
        )
    ops.append(K.RandomHorizontalFlip(p=view.horizontal_flip_prob))
    ops.append(K.ColorJitter(*view.jitter, p=view.color_jitter_prob))
    ops.append(K.RandomGrayscale(p=view.gray_scale_prob))
    if view.gaussian_prob:
        ops.append(K.RandomGaussianBlur((13, 13), SIGMA, p=view.gaussian_prob))
    mean, std = stats(cfg.data)
    ops.append(K.Normalize(torch.tensor(mean), torch.tensor(std)))
    return K.AugmentationSequential(*ops)


def v2_batch_pipeline(cfg: TrialConfig, size: int) -> Any:
    """torchvision.transforms.v2 on a whole batch: one parameter set per call, for all views."""
    from torchvision.transforms import v2

    view = cfg.aug.view1
    scale = (view.crop_min_scale, view.crop_max_scale)
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True
            ),
            v2.RandomApply([v2.ColorJitter(*view.jitter)], p=view.color_jitter_prob),
            v2.RandomGrayscale(view.gray_scale_prob),
            v2.RandomApply([v2.GaussianBlur(13, SIGMA)], p=view.gaussian_prob),
            v2.RandomHorizontalFlip(view.horizontal_flip_prob),
            v2.Normalize(*stats(cfg.data)),
        ]
    )


def bench_library(
    data: Dataset, cfg: TrialConfig, s: Settings, pipeline: Any, threads: int
) -> dict[str, Any]:
    def make(batch: Split, g: torch.Generator) -> torch.Tensor:
        return pipeline(composed_pairs(batch, cfg, g))

    return bench_views(data, s, threads, make)


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    with contextlib.suppress(ImportError):
        import kornia

        versions["kornia"] = kornia.__version__
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        "platform": platform.platform(),
    }


ROW_NAMES = {
    "reference": "sas: reference, torchvision + DataLoader(2 workers)",
    "batched": "sas: batched headsweep.views, {threads} threads",
    "batched_1thread": "sas: batched headsweep.views, 1 thread",
    "step_batched": "sas: pretraining step, batched views",
    "step_reference": "sas: pretraining step, reference loader",
    "simclr_reference": "simclr: reference, torchvision + DataLoader(2 workers)",
    "simclr_batched": "simclr: batched headsweep.views, {threads} threads",
    "simclr_batched_1thread": "simclr: batched headsweep.views, 1 thread",
    "simclr_kornia_slice": "simclr: kornia, crop mode slice, {threads} threads",
    "simclr_kornia_slice_1thread": "simclr: kornia, crop mode slice, 1 thread",
    "simclr_kornia_resample": "simclr: kornia, crop mode resample, {threads} threads",
    "simclr_v2_batch": "simclr: torchvision v2 on the batch (ONE param set per call)",
}


def table(r: dict[str, Any]) -> str:
    res, s = r["results"], r["settings"]
    lines = [
        "| pipeline | views/s (median) | min | max | views per CPU-s | others' CPU | load 1m |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, v in res.items():
        name = ROW_NAMES.get(key, key).format(threads=s["threads"])
        others = "n/a" if v["others_cpu"] is None else f"{100 * v['others_cpu']:.0f}%"
        per_cpu = "n/a" if v["views_per_cpu_s"] is None else f"{v['views_per_cpu_s']:,.0f}"
        lines.append(
            f"| {name} | {v['median']:,.0f} | {v['min']:,.0f} | {v['max']:,.0f} | {per_cpu} | "
            f"{others} | {v['load_avg_1m']:.2f} |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in r["ratios"].items()]
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else float("nan")


def _ratios(
    results: dict[str, Any], section: str, rows: list[str], threads: int
) -> dict[str, float]:
    """Each row against the same section's reference, in views/s and views per CPU-second."""
    ref = results["reference" if section == "sas" else f"{section}_reference"]
    out = {}
    for row in rows:
        if row in results:
            name = ROW_NAMES[row].split(": ", 1)[1].split(" (")[0].format(threads=threads)
            label = f"{section}: {name}"
            out[f"{label} / reference (views/s)"] = _ratio(results[row]["median"], ref["median"])
            out[f"{label} / reference (views per CPU-s)"] = _ratio(
                results[row]["views_per_cpu_s"], ref["views_per_cpu_s"]
            )
    return out


def run(s: Settings, sections: tuple[str, ...] = SECTIONS, steps: bool = True) -> dict[str, Any]:
    torch.set_num_threads(s.threads)
    start = time.perf_counter()
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    recipes: dict[str, Any] = {}
    data = None
    if "sas" in sections:
        cfg = trial_config(s)
        data = load_dataset(cfg.data)
        recipes["sas"] = cfg.to_dict()["aug"]
        results["reference"] = bench_reference(data, cfg, s)
        results["batched"] = bench_batched(data, cfg, s, s.threads)
        results["batched_1thread"] = bench_batched(data, cfg, s, 1)
        if steps:
            results["step_batched"] = bench_step(data, cfg, s, "batched")
            results["step_reference"] = bench_step(data, cfg, s, "reference")
            ratios["sas: pretraining step, batched / reference feed (views/s)"] = (
                results["step_batched"]["median"] / results["step_reference"]["median"]
            )
        ratios |= _ratios(results, "sas", ["batched", "batched_1thread"], s.threads)
    if "simclr" in sections:
        cfg = trial_config(s, "simclr_cifar")
        data = data or load_dataset(cfg.data)
        recipes["simclr"] = cfg.to_dict()["aug"]
        size = data.train.inputs.shape[-1]
        results["simclr_reference"] = bench_reference(data, cfg, s)
        results["simclr_batched"] = bench_batched(data, cfg, s, s.threads)
        results["simclr_batched_1thread"] = bench_batched(data, cfg, s, 1)
        for mode in ("slice", "resample"):
            pipeline = kornia_pipeline(cfg, size, mode)
            if pipeline is not None:
                results[f"simclr_kornia_{mode}"] = bench_library(data, cfg, s, pipeline, s.threads)
        pipeline = kornia_pipeline(cfg, size, "slice")
        if pipeline is not None:
            results["simclr_kornia_slice_1thread"] = bench_library(data, cfg, s, pipeline, 1)
        v2 = v2_batch_pipeline(cfg, size)
        results["simclr_v2_batch"] = bench_library(data, cfg, s, v2, s.threads)
        rows = ["simclr_batched", "simclr_batched_1thread", "simclr_kornia_slice"]
        rows += ["simclr_kornia_slice_1thread", "simclr_kornia_resample", "simclr_v2_batch"]
        ratios |= _ratios(results, "simclr", rows, s.threads)
        for ours, theirs in (
            ("simclr_batched", "simclr_kornia_slice"),
            ("simclr_batched", "simclr_kornia_resample"),
            ("simclr_batched_1thread", "simclr_kornia_slice_1thread"),
        ):
            if theirs in results:
                label = ROW_NAMES[theirs].split(": ", 1)[1].format(threads=s.threads)
                ratios[f"simclr: headsweep / {label} (views/s)"] = (
                    results[ours]["median"] / results[theirs]["median"]
                )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "settings": vars(s),
        "recipes": recipes,
        "data": "digits_on_texture, p_drop 0.5, soft mask, strength 1",
        "load_avg_at_start": list(load_start),
        "load_avg_at_end": list(os.getloadavg()),
        "seconds": time.perf_counter() - start,
        "results": results,
        "ratios": ratios,
    }


def wait_for_quiet(max_load: float, timeout: float) -> None:
    """Other processes on a 2-core machine halve the numbers; give them a chance to finish."""
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(15)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--repeats", type=int, help="timed windows per measurement")
    parser.add_argument("--batch", type=int, help="samples per batch (views: twice that)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.*")
    parser.add_argument(
        "--section", choices=(*SECTIONS, "all"), default="all", help="which recipes to measure"
    )
    parser.add_argument("--no-steps", action="store_true", help="skip the pretraining steps")
    parser.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        help="first wait (up to 10 min) for the 1-min load average to drop below this",
    )
    args = parser.parse_args(argv)
    if args.wait_load:
        wait_for_quiet(args.wait_load, timeout=600)
    s = QUICK if args.quick else Settings()
    if args.repeats:
        s = replace(s, repeats=args.repeats)
    if args.batch:
        s = replace(s, batch=args.batch)
    sections = SECTIONS if args.section == "all" else (args.section,)
    result = run(s, sections, steps=not args.no_steps)
    text = table(result)
    print(text)
    print(
        f"\n{result['seconds']:.0f} s; load average {result['load_avg_at_start'][0]:.2f} at "
        f"start, {result['load_avg_at_end'][0]:.2f} at end"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    header = (
        f"Run {result['date']} on {result['machine']['cpu']} ({result['machine']['cores']} cores)"
    )
    (args.out / "latest.md").write_text(f"{header}\n\n`{result['command']}`\n\n{text}\n")
    return result


if __name__ == "__main__":
    main()
