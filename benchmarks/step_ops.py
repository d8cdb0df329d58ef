"""Where a CPU training step's time goes, by operator (issue 12, acceptance 3: why ResNet-18's
step stays under 85% of the matmul ceiling that benchmarks/step_cpu.py measures).

    python -m benchmarks.step_ops                      # ResNet-18 and grid_cnn, ~2 min quiet
    python -m benchmarks.step_ops --quick              # tiny sizes: the code path only

For each encoder (the project's `build_backbone`, channels_last as `train.memory_format: auto`
picks on the CPU, fp32, the step's thread count) it times forward + backward of a sum over the
features on one fixed batch of 32x32 images under torch.profiler, and splits the self CPU time
into the convolutions' forward (`aten::mkldnn_convolution`), their backward
(`aten::convolution_backward`) and everything else (BatchNorm, ReLU, the residual adds, copies).
FLOPs per part come from torch.utils.flop_counter.FlopCounterMode over the same step, so each
convolution part has its own GFLOP/s, set against a fp32 `torch.mm` rate measured in the same
run (`benchmarks.step_cpu.bench_matmul` at n = 4096 only). Prints JSON; --out writes it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.step_cpu import Settings, bench_matmul
from headsweep.backbones import build_backbone
from headsweep.config import ModelConfig

FORWARD, BACKWARD = "aten::mkldnn_convolution", "aten::convolution_backward"
MODELS = {
    "resnet18": ModelConfig(backbone="resnet18"),
    "grid_cnn": ModelConfig(backbone="grid_cnn", widths=(32, 64, 128, 128)),
}


def step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model(x).sum().backward()


def breakdown(name: str, batch: int, steps: int, ceiling: float) -> dict[str, Any]:
    model = build_backbone(MODELS[name], 3).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        step(model, x)
    flops = {str(op): n / 1e9 for op, n in counter.get_flop_counts()["Global"].items()}
    step(model, x)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(model, x)
    self_s = {e.key: e.self_cpu_time_total / 1e6 / steps for e in prof.key_averages()}
    total = sum(self_s.values())
    parts: dict[str, Any] = {}
    for label, op, flop_key in (
        ("conv_forward", FORWARD, "aten.convolution"),
        ("conv_backward", BACKWARD, "aten.convolution_backward"),
    ):
        seconds = self_s.get(op, 0.0)
        gflops = flops.get(flop_key, 0.0) / seconds if seconds else None
        parts[label] = {
            "s_per_step": seconds,
            "share": seconds / total if total else None,
            "gflop_per_step": flops.get(flop_key, 0.0),
            "gflops_per_s": gflops,
            "pct_matmul": 100 * gflops / ceiling if gflops else None,
        }
    rest = total - parts["conv_forward"]["s_per_step"] - parts["conv_backward"]["s_per_step"]
    top = sorted(
        ((k, v) for k, v in self_s.items() if k not in (FORWARD, BACKWARD)),
        key=lambda kv: -kv[1],
    )[:6]
    all_gflop = sum(flops.values())
    return {
        "batch": batch,
        "steps": steps,
        "s_per_step": total,
        "gflop_per_step": all_gflop,
        "pct_matmul": 100 * all_gflop / total / ceiling if total else None,
        **parts,
        "other": {"s_per_step": rest, "share": rest / total if total else None},
        "other_top_ops_s": dict(top),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # step_cpu.py's ceiling measurement at n = 4096 only: the median of 5 windows of ~0.5 s
    matmul = Settings((256,), 256, 0.02, 2) if args.quick else Settings((4096,), 4096)
    plans = (
        {"resnet18": (2, 1), "grid_cnn": (8, 1)}
        if args.quick
        else {
            "resnet18": (128, 3),
            "grid_cnn": (512, 5),
        }
    )
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = list(os.getloadavg())
    ceiling = bench_matmul(matmul)["ceiling_gflops_per_s"]
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.step_ops", *(argv or sys.argv[1:])]),
        "started": started,
        "quick": args.quick,
        "threads": args.threads,
        "torch": torch.__version__,
        "load_avg_start": load_start,
        "matmul": {"n": matmul.matmul_ns[0], "gflops_per_s": ceiling},
        "models": {m: breakdown(m, b, s, ceiling) for m, (b, s) in plans.items()},
        "load_avg_end": list(os.getloadavg()),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
