"""Two-view augmentation speed: headsweep's batched pipeline against the papers' reference.

    python -m benchmarks.run            # make bench; ~1-2 min on 2 CPU cores
    python -m benchmarks.run --quick    # smoke run, a few seconds of timing
    python -m benchmarks.run --wait-load 0.3   # first wait for a quiet machine (up to 10 min)

One process measures, on the same data (`digits_on_texture`, the digit composed in both
pipelines, p_drop 0.5) and the same recipe (pad-and-crop 4, flip 0.5, colour jitter
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

Every figure is a median over repeats of a timed window (throughput = views / wall seconds).
Other processes on a 2-core machine change the numbers a lot (with 2 torch threads, a busy
second core can slow the batched pipeline 10-30x), so each measurement records the share of the
CPU that other processes used meanwhile ("others' CPU", from /proc) next to the load average:
trust rows where it is near 0%. Results: a table on stdout, benchmarks/results/latest.json and
latest.md; BENCHMARKS.md has the recorded run and what differs between the pipelines.
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
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

from headsweep import train as train_module
from headsweep.config import AugConfig, TrialConfig
from headsweep.data import Dataset, Split, load_dataset
from headsweep.views import MEAN, STD, two_views

RESULTS = Path(__file__).resolve().parent / "results"


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


def trial_config(s: Settings) -> TrialConfig:
    """The benchmarked recipe: SimCLR views of SCIENCE.md §4.2 plus the CIFAR pad-and-crop."""
    return TrialConfig.from_dict(
        {
            "data": {"name": "digits_on_texture", "n_train": s.n_train, "n_test": s.batch},
            "aug": {
                "p_drop": 0.5,
                "crop_pad": 4,
                "flip": 0.5,
                "jitter": [0.4, 0.4, 0.4, 0.1],
                "jitter_p": 0.8,
                "gray_p": 0.2,
            },
            "model": {"backbone": "small_cnn"},
            "train": {"batch_size": s.batch, "threads": s.threads, "device": "cpu", "epochs": 1000},
            "probe": {"online_n": 0},
        }
    )


# --------------------------------------------------------------------------- reference


def reference_transform(aug: AugConfig, size: int) -> T.Compose:
    """torchvision's per-sample recipe, built from the same AugConfig."""
    ops: list[Any] = [T.RandomCrop(size, padding=aug.crop_pad)] if aug.crop_pad else []
    ops += [
        T.RandomHorizontalFlip(aug.flip),
        T.RandomApply([T.ColorJitter(*aug.jitter)], p=aug.jitter_p),
        T.RandomGrayscale(aug.gray_p),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ]
    return T.Compose(ops)


class ReferenceViews(torch.utils.data.Dataset):
    """Sample i -> (view 1, view 2), float (3, H, W) each: the digit composed per view in numpy
    (x = (1 - s m) C + s m D, rounded to uint8 for PIL; with probability p_drop one view at
    random keeps the object alone), then the torchvision transform on the PIL image."""

    def __init__(self, split: Split, aug: AugConfig, strength: float, soft_mask: bool) -> None:
        self.objects = split.inputs.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3)
        self.digits = (
            None
            if split.overlay is None
            else split.overlay.permute(0, 2, 3, 1).contiguous().numpy()
        )
        self.p_drop, self.strength, self.soft_mask = aug.p_drop, strength, soft_mask
        self.transform = reference_transform(aug, self.objects.shape[1])

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
            self.transform(Image.fromarray(self._compose(i, not (drop and first == (v == 0)))))
            for v in (0, 1)
        ]
        return views[0], views[1]


def reference_loader(split: Split, cfg: TrialConfig, s: Settings) -> DataLoader:
    views = ReferenceViews(split, cfg.aug, cfg.data.strength, cfg.data.soft_mask)
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


def _ticks(pid: int) -> int:
    """CPU clock ticks (user + system) of one process, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return sum(int(v) for v in stat.rsplit(")", 1)[1].split()[11:13])


def _tree(pid: int) -> list[int]:
    """pid and its descendants (DataLoader workers), from /proc/<pid>/task/*/children."""
    out = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            out += _tree(int(child))
    return out


class OthersCPU:
    """Share of the machine's CPU that other processes used during a `with` block (0 = the
    machine was ours, 0.5 = one of two cores busy elsewhere): the system's busy clock ticks
    (/proc/stat, steal included) minus those of this process and its children. The load
    average cannot tell the two apart while our own workers run. None where /proc is missing."""

    share: float | None = None
    own_seconds: float | None = None  # CPU seconds of this process and its children

    def _snapshot(self) -> tuple[float, int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        own = 0
        for pid in _tree(os.getpid()):
            with contextlib.suppress(OSError):  # a child may exit in between
                own += _ticks(pid)
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
    """Per-channel mean and std of a batch of views: both pipelines should agree roughly."""
    return {"mean": v.mean((0, 2, 3)).tolist(), "std": v.std((0, 2, 3)).tolist()}


def bench_reference(data: Dataset, cfg: TrialConfig, s: Settings) -> dict[str, Any]:
    loader = reference_loader(data.train, cfg, s)
    it = iter(loader)
    v1, v2 = next(it)  # starts the workers
    stats = channel_stats(torch.cat([v1, v2]))
    # The workers finish their batches at nearly the same moment, so a window is a whole number
    # of rounds (one batch per worker); otherwise it could time a batch that was already
    # waiting. Warm-up: two rounds, after which the main process waits on production.
    calls = -(-s.ref_window // s.workers) * s.workers
    seconds, cpu = windows(it.__next__, calls, s.repeats, warmup=2 * s.workers)
    views = 2 * s.batch * calls
    result = summary([views / t for t in seconds], views * s.repeats, cpu)
    del it, loader
    gc.collect()  # shuts the workers down before anything else is timed
    return {**result, "views": stats}


def batch_stream(split: Split, batch: int, g: torch.Generator) -> Iterator[Split]:
    """Random batches as headsweep.train takes them (an epoch's permutation, then `take`)."""
    while True:
        order = torch.randperm(len(split), generator=g)
        for i in range(len(split) // batch):
            yield split.take(order[i * batch : (i + 1) * batch])


def bench_batched(data: Dataset, cfg: TrialConfig, s: Settings, threads: int) -> dict[str, Any]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        batches = batch_stream(data.train, s.batch, g)
        stats = channel_stats(torch.cat(two_views(next(batches), cfg.aug, cfg.data, g)))
        seconds, cpu = windows(
            lambda: two_views(next(batches), cfg.aug, cfg.data, g),
            s.batched_window,
            s.repeats,
            warmup=3,
        )
    finally:
        torch.set_num_threads(before)
    views = 2 * s.batch * s.batched_window
    return {**summary([views / t for t in seconds], views * s.repeats, cpu), "views": stats}


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


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
    }


def table(r: dict[str, Any]) -> str:
    res, s = r["results"], r["settings"]
    rows = [
        ("reference: torchvision + DataLoader(2 workers)", res["reference"]),
        (f"batched: headsweep.views, {s['threads']} threads", res["batched"]),
        ("batched: headsweep.views, 1 thread", res["batched_1thread"]),
        ("pretraining step, batched views", res["step_batched"]),
        ("pretraining step, reference loader", res["step_reference"]),
    ]
    lines = [
        "| pipeline | views/s (median) | min | max | views per CPU-s | others' CPU | load 1m |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in rows:
        others = "n/a" if v["others_cpu"] is None else f"{100 * v['others_cpu']:.0f}%"
        per_cpu = "n/a" if v["views_per_cpu_s"] is None else f"{v['views_per_cpu_s']:,.0f}"
        lines.append(
            f"| {name} | {v['median']:,.0f} | {v['min']:,.0f} | {v['max']:,.0f} | {per_cpu} | "
            f"{others} | {v['load_avg_1m']:.2f} |"
        )
    ratios = r["ratios"]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f}x |" for k, v in ratios.items()]
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else float("nan")


def run(s: Settings) -> dict[str, Any]:
    torch.set_num_threads(s.threads)
    cfg = trial_config(s)
    start = time.perf_counter()
    load_start = os.getloadavg()
    data = load_dataset(cfg.data)
    results = {
        "reference": bench_reference(data, cfg, s),
        "batched": bench_batched(data, cfg, s, s.threads),
        "batched_1thread": bench_batched(data, cfg, s, 1),
        "step_batched": bench_step(data, cfg, s, "batched"),
        "step_reference": bench_step(data, cfg, s, "reference"),
    }
    ref = results["reference"]["median"]
    ratios = {
        "batched / reference (views/s)": results["batched"]["median"] / ref,
        "batched 1 thread / reference (views/s)": results["batched_1thread"]["median"] / ref,
        "batched / reference (views per CPU-second)": _ratio(
            results["batched"]["views_per_cpu_s"], results["reference"]["views_per_cpu_s"]
        ),
        "batched 1 thread / reference (views per CPU-second)": _ratio(
            results["batched_1thread"]["views_per_cpu_s"], results["reference"]["views_per_cpu_s"]
        ),
        "step: batched / reference feed": (
            results["step_batched"]["median"] / results["step_reference"]["median"]
        ),
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "settings": vars(s),
        "recipe": {
            "data": cfg.data.name,
            "aug": cfg.to_dict()["aug"],
            "strength": cfg.data.strength,
            "soft_mask": cfg.data.soft_mask,
            "model": "small_cnn " + str(list(cfg.model.widths)),
            "loss": cfg.loss.name,
        },
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
    result = run(s)
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
