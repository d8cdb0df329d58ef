"""How long a finished sweep's analysis takes, and how much of it is drawing figures (issue 12,
acceptance 2: the analysis runs between a sweep's last trial and its exit).

    python -m benchmarks.analysis_time NAME --root ROOT [--rounds 3]

Runs `sweeps.results.analyze_sweep` on a stored sweep: once to warm up (imports, caches),
then `--rounds` times without logging to MLflow, timing every figure's `savefig` (the PNG
encoding included), then once with the MLflow logging `headsweep run` does. Re-running the
analysis changes no file (writes only when the bytes change), so the stored sweep is left as
it was. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import analysis.bounds_figure as bounds_figure
import analysis.figures as figures
from sweeps.locations import Locations
from sweeps.results import analyze_sweep


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    loc = Locations.make(args.root)
    analyze_sweep(args.name, loc, log_to_mlflow=False)
    save = figures._save
    saving: list[float] = []

    def timed_save(fig: Any, path: Path) -> Path:
        start = time.perf_counter()
        try:
            return save(fig, path)
        finally:
            saving.append(time.perf_counter() - start)

    rounds = []
    figures._save = bounds_figure.save_png = timed_save
    try:
        for _ in range(args.rounds):
            saving.clear()
            start = time.perf_counter()
            analyze_sweep(args.name, loc, log_to_mlflow=False)
            rounds.append(
                {"analysis_s": time.perf_counter() - start, "savefig_s": sum(saving)}
                | {"figures": len(saving)}
            )
    finally:
        figures._save = bounds_figure.save_png = save
    start = time.perf_counter()
    analyze_sweep(args.name, loc, log_to_mlflow=True)
    with_mlflow = time.perf_counter() - start
    result = {
        "command": " ".join(["python -m benchmarks.analysis_time", *(argv or sys.argv[1:])]),
        "load_avg": list(os.getloadavg()),
        "rounds": rounds,
        "median_analysis_s": statistics.median(r["analysis_s"] for r in rounds),
        "median_savefig_s": statistics.median(r["savefig_s"] for r in rounds),
        "with_mlflow_logging_s": with_mlflow,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
