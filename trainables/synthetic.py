"""The `synthetic` trainable: one run of [X]'s two-layer theory models (headsweep.synthetic).
Runs take seconds, so they report progress but restart rather than checkpoint; the final report
carries the trial's record (`record.json`) in its one checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from headsweep import metrics as M
from headsweep import synthetic
from headsweep.configtree import resolve
from headsweep.record import ProbeRow, TrialRecord
from headsweep.synthetic_config import SyntheticConfig, SyntheticResult
from trainables.common import final_files, node_id, numeric, report, use_trial_resources

NAME = "synthetic"
SEED_KEY = "seed"
SMOKE = {"steps": 200}


def smoke(base: Mapping[str, Any]) -> dict[str, Any]:
    """The `--smoke` pins (the same for every spec: a synthetic trial has one step count)."""
    return dict(SMOKE)


EpochHook = Callable[[int, dict[str, float]], None]


def parse(config: Mapping[str, Any]) -> SyntheticConfig:
    return SyntheticConfig.from_dict(config)


def targets(cfg: SyntheticConfig) -> list[str]:
    """The probe targets: sign(z_k) of each feature, named like the dataset's labels."""
    return [f"feature{k}" for k in range(cfg.features)]


def record_of(
    result: SyntheticResult,
    seconds: float,
    resources: Mapping[str, float] | None = None,
    node: str = "",
) -> TrialRecord:
    cfg = result.config
    protocol = (
        f"ridge(reg={cfg.probe_penalty:g},closed_form,standardize=False,shots={cfg.probe_shots},"
        f"draws={cfg.probe_draws})"
    )
    probes = [
        ProbeRow(tap, target, accuracy, protocol, dim, cfg.probe_shots, cfg.probe_test)
        for target, pre, post in zip(targets(cfg), result.probe_pre, result.probe_post, strict=True)
        for tap, accuracy, dim in (("pre", pre, cfg.width), ("post", post, cfg.out_dim))
    ]
    history = [
        {M.STEP: float(step), M.LOSS: loss}
        for step, loss in zip(result.history_steps, result.loss_history, strict=True)
    ]
    return TrialRecord(
        trainable=NAME,
        config=cfg.to_dict(),
        metrics=result.metrics(),
        probes=probes,
        history=history,
        timings={"total_s": seconds},
        device=cfg.device,
        steps=cfg.steps,
        resources=dict(resources or {}),
        node_id=node,
    )


def run_local(cfg: SyntheticConfig, on_epoch: EpochHook | None = None) -> TrialRecord:
    """One trial in-process, without Ray."""
    start = time.perf_counter()
    hook = (lambda epoch, metrics, state: on_epoch(epoch, metrics)) if on_epoch else None
    result = synthetic.run(cfg, on_epoch=hook)
    return record_of(result, time.perf_counter() - start)


def default_metric(cfg: SyntheticConfig) -> str:
    return M.SLOPE


def check_metric(metric: str, cfg: SyntheticConfig) -> str:
    parsed = M.parse(metric)
    if parsed is not None and parsed.kind in ("synthetic", "weight", "weight_norm", "train"):
        return ""
    if parsed is not None and parsed.kind == "probe" and parsed.target in targets(cfg):
        return ""
    return (
        f"{metric!r} is not reported by the synthetic trainable "
        "(synthetic/..., probe/feature<k>/pre|post|gap, train/loss)"
    )


def run_synthetic(config: dict[str, Any], checkpoint_every: int = 1) -> None:
    del checkpoint_every  # seconds-long runs restart instead
    cfg = parse(resolve(config))
    granted = use_trial_resources()
    start = time.perf_counter()
    result = synthetic.run(cfg, on_epoch=lambda epoch, metrics, state: report(numeric(metrics)))
    node = node_id()
    record = record_of(result, time.perf_counter() - start, granted, node)
    final: dict[str, Any] = numeric(record.table_metrics())
    final[M.DONE] = 1.0
    final[M.NODE_ID] = node
    report(final, files=final_files(record))
