"""`headsweep calibrate SPEC`: can this experiment's instrument show its trends at all?

Runs the calibration control of a spec in-process (no Ray, no MLflow): the spec's base config
with no head (`model.head.name: none`) and no digit drop (`aug.p_drop: 0`), for a few seeds,
then applies the same rule the trend checks use (`analysis.verdicts.calibrate`): the control
must learn the digit (probe >= 0.6) where the data has one, and no target may sit at the
ceiling (> 0.97). Exit 0 when it passes, 1 when it fails, 2 for a spec that cannot be
calibrated (not an image experiment).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from analysis.verdicts import CEILING, CONTROL_FLOOR, Calibration, calibrate
from headsweep import metrics as M
from sweeps.spec import SpecError, SweepSpec
from trainables import TRAINABLES


def control_configs(spec: SweepSpec, seeds: int) -> list[dict[str, Any]]:
    """The control's trial configs: base config, head none, p_drop 0, seeds 0..seeds-1."""
    if not spec.info.calibrates:
        image = ", ".join(name for name, info in TRAINABLES.items() if info.calibrates)
        raise SpecError(
            f"calibrate: spec {spec.name!r} runs the {spec.trainable!r} trainable; calibration "
            f"applies to the image experiments (trainable: {image})"
        )
    configs = []
    for seed in range(seeds):
        config = spec.trial_config({})
        config.setdefault("model", {})["head"] = {"name": "none"}
        config.setdefault("aug", {})["p_drop"] = 0.0
        config.setdefault("train", {})["seed"] = seed
        configs.append(config)
    return configs


def run_calibration(
    spec: SweepSpec, seeds: int = 1, echo: Callable[[str], None] = print
) -> Calibration:
    """Train the control for each seed and judge it; `echo` receives progress lines."""
    rows = []
    for seed, config in enumerate(control_configs(spec, seeds)):
        settings = spec.info.parse(config)
        start = time.perf_counter()

        def progress(epoch: int, metrics: dict[str, float], seed: int = seed) -> None:
            echo(f"  seed {seed}: epoch {epoch} loss {metrics[M.LOSS]:.4f}")

        record = spec.info.run_local(settings, progress)
        echo(f"  seed {seed}: {time.perf_counter() - start:.0f} s")
        flat = record.flat_config()
        for probe in record.probes:
            rows.append(
                {
                    "trial_id": f"control-{seed}",
                    "seed": seed,
                    "model.head.name": flat["model.head.name"],
                    "aug.p_drop": flat["aug.p_drop"],
                    "train.epochs": flat["train.epochs"],
                    "target": probe.target,
                    "tap": probe.tap,
                    "accuracy": probe.accuracy,
                }
            )
    return calibrate(pd.DataFrame(rows))


def cmd_calibrate(spec: SweepSpec, seeds: int) -> int:
    print(
        f"calibrating {spec.name}: control = base config, head none, p_drop 0, {seeds} seed(s); "
        f"rule: digit probe >= {CONTROL_FLOOR}, every target <= {CEILING}"
    )
    result = run_calibration(spec, seeds)
    print(result.line())
    return 0 if result.ok else 1
