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
from typing import Any

import pandas as pd

from analysis.verdicts import CEILING, CONTROL_FLOOR, Calibration, calibrate
from sweeps.spec import SpecError, SweepSpec


def control_configs(spec: SweepSpec, seeds: int) -> list[dict[str, Any]]:
    """The control's trial configs: base config, head none, p_drop 0, seeds 0..seeds-1."""
    if spec.trainable != "contrastive":
        raise SpecError(
            f"calibrate: spec {spec.name!r} runs the {spec.trainable!r} trainable; calibration "
            "applies to the image experiments (trainable: contrastive)"
        )
    configs = []
    for seed in range(seeds):
        config = spec.trial_config({})
        config.setdefault("model", {})["head"] = {"name": "none"}
        config.setdefault("aug", {})["p_drop"] = 0.0
        config.setdefault("train", {})["seed"] = seed
        configs.append(config)
    return configs


def run_calibration(spec: SweepSpec, seeds: int = 1, echo=print) -> Calibration:
    """Train the control for each seed and judge it; `echo` receives progress lines."""
    from headsweep import TrialConfig, pretrain

    rows = []
    for config in control_configs(spec, seeds):
        cfg = TrialConfig.from_dict(config)
        seed = cfg.train.seed
        start = time.perf_counter()

        def progress(epoch: int, metrics: dict[str, float], state: Any, seed: int = seed) -> None:
            echo(f"  seed {seed}: epoch {epoch} loss {metrics['train/loss']:.4f}")

        result = pretrain(cfg, on_epoch=progress)
        echo(f"  seed {seed}: {time.perf_counter() - start:.0f} s")
        for probe in result.probes:
            rows.append(
                {
                    "trial_id": f"control-{seed}",
                    "seed": seed,
                    "model.head.name": "none",
                    "aug.p_drop": 0.0,
                    "train.epochs": cfg.train.epochs,
                    "target": probe["target"],
                    "tap": probe["tap"],
                    "accuracy": probe["accuracy"],
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
