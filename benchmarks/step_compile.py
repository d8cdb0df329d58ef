"""Does torch.compile lift the CPU training step toward the matmul ceiling? (issue 12,
acceptance 3: ResNet-18's step stays at 56-68% of it, benchmarks/step_cpu.py.)

    python -m benchmarks.step_compile                  # ResNet-18, batch 512: ~9 min quiet
    python -m benchmarks.step_compile --quick --out /tmp/c.json   # grid_cnn, tiny: the code path

Two trials built as benchmarks/step_cpu.py builds them (the quickstart's recipe, channels_last,
fp32, the same seed and the same fixed views); one keeps its eager model, the other's model is
wrapped in `torch.compile` (inductor's defaults; the first compiled step, compile included, is
timed on its own as `compile_s`). Then, per round, a matmul ceiling (step_cpu's `bench_matmul`,
n = 1024 and 2048), one eager step and one compiled step (benchmarks.gpu.model_step: forward of
both views, NT-Xent, backward, Adam), so a drift in the machine's rate hits all three alike.
GFLOP/s = the step's FlopCounterMode count / the step's seconds; each round's ratio to its own
ceiling, medians over the rounds. The first step of each (the compiled one's compile) computes
gradients only, from the same parameters, so they must agree (`grad_max_rel_diff`, relative to
the largest gradient): a compiled step that computes something else shows there. Prints JSON;
--out writes it too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu import model_step
from benchmarks.step_cpu import Settings, bench_matmul, build_trial, trial_config
from headsweep.views import two_views


def timed_step(trial: Any, v1: torch.Tensor, v2: torch.Tensor, optimize: bool = True) -> float:
    start = time.perf_counter()
    model_step(trial, v1, v2, optimize)
    return time.perf_counter() - start


def gradient_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """The largest difference between two models' gradients, relative to the largest gradient."""
    pairs = [
        (p.grad, q.grad)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
        if p.grad is not None and q.grad is not None
    ]
    largest = max(g.abs().max().item() for g, _ in pairs)
    return max((g - h).abs().max().item() for g, h in pairs) / largest


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="grid_cnn at batch 8: a smoke test")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, batch = ("grid_cnn", 8) if args.quick else ("resnet18", 512)
    matmul = Settings((256,), 256, 0.02, 2) if args.quick else Settings((1024, 2048))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = list(os.getloadavg())

    cfg, overrides = trial_config(model, batch, matmul, n_train=max(batch, 64))
    cache: dict[str, Any] = {}
    eager, compiled = build_trial(cfg, cache), build_trial(cfg, cache)
    # the optimizer holds the same parameters; the wrapper forwards like the Model it wraps
    compiled.model = torch.compile(compiled.model)  # type: ignore[assignment]
    v1, v2 = two_views(eager.data.train.head(batch), cfg.aug, cfg.data, torch.Generator())
    with FlopCounterMode(display=False) as counter:
        model_step(eager, v1, v2, optimize=False)
    gflop = counter.get_total_flops() / 1e9
    # the first steps compute gradients only, from the same parameters: they must agree
    compile_s = timed_step(compiled, v1, v2, optimize=False)
    timed_step(eager, v1, v2, optimize=False)  # warm-up, as the compiled one had
    gap = gradient_gap(eager.model, compiled.model)
    rounds = []
    for _ in range(args.rounds):
        ceiling = bench_matmul(matmul)["ceiling_gflops_per_s"]
        row: dict[str, float] = {"ceiling_gflops_per_s": ceiling}
        for name, trial in (("eager", eager), ("compiled", compiled)):
            rate = gflop / timed_step(trial, v1, v2)
            row |= {f"{name}_gflops_per_s": rate, f"{name}_pct_matmul": 100 * rate / ceiling}
        rounds.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.step_compile", *(argv or sys.argv[1:])]),
        "started": started,
        "quick": args.quick,
        "threads": args.threads,
        "torch": torch.__version__,
        "model": model,
        "batch": batch,
        "overrides": overrides,
        "channels_last": eager.channels_last,
        "gflop_per_step": gflop,
        "compile_s": compile_s,
        "load_avg_start": load_start,
        "rounds": rounds,
        "median": medians,
        "grad_max_rel_diff": gap,
        "compiled_over_eager": medians["compiled_gflops_per_s"] / medians["eager_gflops_per_s"],
        "load_avg_end": list(os.getloadavg()),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
