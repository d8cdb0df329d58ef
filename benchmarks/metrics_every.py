"""What the per-step I₂ metrics (train/mi, mi_lower, mi_upper) cost an epoch, by
`train.metrics_every` (k: computed on steps 0, k, 2k, ...).

    python -m benchmarks.metrics_every                  # k = 1, 4, 6 and 1000 (step 0 only)
    python -m benchmarks.metrics_every --every 1 2 3 4 --rounds 5

The quickstart's base config (sweeps/quickstart.yaml: textures_v2, grid_cnn, mlp head, batch
256, 3,000 images = 11 steps an epoch) on `headsweep.train._Trial`, one thread (a quickstart
trial's 1 CPU), one trial per k on the same data; epochs interleaved over `--rounds` rounds
after a warm-up epoch each, median `train/epoch_s` per k. Besides, the metrics' own block
(the method's loss on encoder features + `bottleneck_metrics`) timed alone on one step's real
features (median of 50 calls): calls per epoch x that time / the epoch time is the share
without the noise of whole epochs. `uptime`'s load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from headsweep.config import TrialConfig
from headsweep.data import load_dataset
from headsweep.losses import nt_xent
from headsweep.regularizers import bottleneck_metrics
from headsweep.train import _Trial
from headsweep.views import two_views

SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"


def metric_block_seconds(trial: _Trial, calls: int = 50) -> float:
    """Median seconds of one step's metric block on the trial's real features."""
    cfg = trial.cfg
    batch = trial.data.train.take(torch.arange(trial.batch_size))
    v1, v2 = two_views(batch, cfg.aug, cfg.data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        taps = trial.encode_views(v1, v2)
    h, z = taps["pre"].float(), taps["post"].float()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        h1, h2 = h.chunk(2)
        z1, z2 = z.chunk(2)
        own = nt_xent(h1, h2, cfg.loss.temperature)
        float(bottleneck_metrics(h1, h2, z1, z2, own)["mi_upper"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(every: list[int], rounds: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    base = yaml.safe_load(SPEC.read_text())["base"]
    cfg = TrialConfig.from_dict(base)
    data = load_dataset(cfg.data)
    trials = {}
    for k in every:
        torch.manual_seed(0)
        trials[k] = _Trial(cfg.replace({"train.metrics_every": k}), data, torch.device("cpu"))
        trials[k].train_epoch()  # warm-up
    epoch_s: dict[int, list[float]] = {k: [] for k in every}
    for _ in range(rounds):
        for k, trial in trials.items():
            epoch_s[k].append(trial.train_epoch()["train/epoch_s"])
    steps = trials[every[0]].steps_per_epoch
    block = metric_block_seconds(trials[every[0]])
    rows = []
    for k in every:
        calls = -(-steps // k)
        median = statistics.median(epoch_s[k])
        rows.append(
            {
                "k": k,
                "metric_steps": calls,
                "epoch_s_median": round(median, 4),
                "epoch_s_min": round(min(epoch_s[k]), 4),
                "epoch_s_max": round(max(epoch_s[k]), 4),
                "block_share": round(calls * block / median, 4),
            }
        )
    return {"steps_per_epoch": steps, "block_s": round(block, 5), "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, nargs="+", default=[1, 4, 6, 1000])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    before = os.getloadavg()
    result = run(args.every, args.rounds)
    result["load_before"], result["load_after"] = before, os.getloadavg()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
