"""The `contrastive` trainable: one `headsweep.pretrain` trial under Tune.

Reports every epoch (training metrics and the cheap online probe), checkpoints every
`checkpoint_every` epochs and at the end (state, resolved config), resumes from Tune's
checkpoint, and reports the final metrics with the trial's record (`record.json`) in the last
checkpoint. Exceptions propagate: Tune records the failure and retries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from headsweep import TrainState, TrialConfig, TrialResult, pretrain
from headsweep import metrics as M
from headsweep.configtree import resolve
from headsweep.data import groups_of, targets_of
from headsweep.groups import methods_of
from headsweep.optim import build_optimizer
from headsweep.record import FewShotRow, GroupRow, ProbeRow, TrialRecord
from trainables.common import (
    config_file,
    final_files,
    node_id,
    numeric,
    optimizer_check,
    report,
    restored_state,
    use_trial_resources,
)

NAME = "contrastive"
SEED_KEY = "train.seed"
# --smoke: every trial shrunk to seconds (tiny data, one epoch, no warmup: a warmup is bounded
# by the epochs, and the papers' specs warm up for 10).
SMOKE = {
    "data.n_train": 256,
    "data.n_test": 128,
    "train.epochs": 1,
    "train.batch_size": 64,
    "optim.warmup_epochs": 0,
    "probe.steps": 50,
    "probe.online_n": 64,
}
EpochHook = Callable[[int, dict[str, float]], None]


def smoke(base: Mapping[str, Any]) -> dict[str, Any]:
    """The `--smoke` pins for a spec's nested `base`: `SMOKE`, and a linear evaluation that the
    spec turns on shrunk the same way (one epoch, no warmup) rather than switched off."""
    linear = ((base.get("probe") or {}).get("linear_eval") or {}) if isinstance(base, dict) else {}
    if not (isinstance(linear, dict) and linear.get("epochs")):
        return dict(SMOKE)
    return {**SMOKE, "probe.linear_eval.epochs": 1, "probe.linear_eval.warmup_epochs": 0}


def parse(config: Mapping[str, Any]) -> TrialConfig:
    """The validated config of a nested trial config (defaults filled in)."""
    return TrialConfig.from_dict(config)


def record_of(
    result: TrialResult, resources: Mapping[str, float] | None = None, node: str = ""
) -> TrialRecord:
    return TrialRecord(
        trainable=NAME,
        config=result.config,
        metrics=dict(result.metrics),
        probes=[ProbeRow.from_dict(row) for row in result.probes],
        history=[dict(row) for row in result.history],
        timings=dict(result.timings),
        device=result.device,
        steps=int(result.metrics.get(M.STEPS, 0)),
        resources=dict(resources or {}),
        node_id=node,
        groups=[GroupRow.from_dict(row) for row in result.groups],
        few_shot=[FewShotRow.from_dict(row) for row in result.few_shot],
    )


def run_local(cfg: TrialConfig, on_epoch: EpochHook | None = None) -> TrialRecord:
    """One trial in-process, without Ray (`headsweep trial`, `headsweep calibrate`)."""

    def hook(epoch: int, metrics: dict[str, float], state: TrainState) -> None:
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    return record_of(pretrain(cfg, on_epoch=hook))


def default_metric(cfg: TrialConfig) -> str:
    """The pre probe of the data's last target (the digit where there is one)."""
    return M.probe(targets_of(cfg.data)[-1], "pre")


def check_metric(metric: str, cfg: TrialConfig) -> str:
    """ "" when a trial of `cfg` reports `metric`, else why not."""
    targets = targets_of(cfg.data)
    parsed = M.parse(metric)
    if parsed is not None and parsed.kind in M.PROBE_KINDS and parsed.tap:
        if parsed.target not in targets:
            return f"unknown target {parsed.target!r} in {metric!r} (allowed: {', '.join(targets)})"
        return ""
    if parsed is not None and (parsed.kind == "train" or M.is_diagnostic(metric)):
        return ""
    if parsed is not None and parsed.kind in ("worst", "average"):
        return group_metric_problem(metric, parsed, cfg)
    return (
        f"{metric!r} is not a reported metric (use probe/<target>/pre|post|"
        f"gap, online/<target>/pre|post|gap, knn/<target>/pre|post|gap, worst/<target>/pre|"
        f"post|gap/erm|dfr, rank|align|uniform/<tap> (online_rank/<tap>, ... per epoch) or "
        f"train/...; targets: {', '.join(targets)})"
    )


def group_metric_problem(metric: str, parsed: M.Metric, cfg: TrialConfig) -> str:
    """ "" when a trial of `cfg` reports the worst-group metric, else why not: the data must
    have groups, the target must be one of them and probe.worst_group must fit that method."""
    groups = groups_of(cfg.data)
    if not groups:
        return (
            f"{metric!r} is never reported: data.name={cfg.data.name!r} has no groups (set "
            "data.spurious_rho on textures_v2, or use waterbirds)"
        )
    if parsed.target not in groups:
        return (
            f"unknown target {parsed.target!r} in {metric!r} (group targets: {', '.join(groups)})"
        )
    methods = methods_of(cfg.probe.worst_group)
    if parsed.stat not in methods:
        return (
            f"{metric!r} is never reported: probe.worst_group={cfg.probe.worst_group!r} "
            f"fits {', '.join(methods) or 'nothing'}"
        )
    return ""


def contrastive(config: dict[str, Any], checkpoint_every: int = 1) -> None:
    cfg = parse(resolve(config))
    granted = use_trial_resources()
    epochs = cfg.train.epochs
    # this trial's optimizer on a stand-in parameter: what a checkpoint's state must provide
    probe = build_optimizer(cfg.optim, [torch.nn.Parameter(torch.zeros(1))], cfg.train.batch_size)
    restored = restored_state(optimizer_check(probe))
    # Recorded in every report, so a resumed trial shows where it picked up.
    resumed_from = float(restored["epoch"]) if restored else 0.0
    resolved = config_file(cfg.to_dict())

    def on_epoch(epoch: int, metrics: dict[str, float], state: TrainState) -> None:
        due = bool(checkpoint_every) and (epoch % checkpoint_every == 0 or epoch == epochs)
        values = {**numeric(metrics), M.RESUMED_FROM: resumed_from}
        report(values, state if due else None, resolved if due else None)

    result = pretrain(cfg, on_epoch=on_epoch, resume=restored)
    node = node_id()
    record = record_of(result, granted, node)
    final: dict[str, Any] = numeric(record.table_metrics())
    final[M.EPOCH] = epochs
    final[M.RESUMED_FROM] = resumed_from
    final[M.DONE] = 1.0
    final[M.NODE_ID] = node  # a string, kept out of MLflow
    report(final, files=final_files(record))
