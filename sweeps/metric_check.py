"""Is a search or scheduler metric one that a trial of this config actually reports?

The trainables' own `check_metric` knows the families and targets; this adds what depends on
the config: the head's taps (probe/<target>/layer1 exists only for a head with that layer; the
same for knn/... and the diagnostics rank/, align/, uniform/ and their per-epoch online_
names, which need probe.diagnostics), the per-epoch online probe (off when probe.online_n
is 0; pre, post and gap only), [O]'s linear evaluation (on when probe.linear_eval.epochs >
0, on its `taps`, no gap), and the train/... statistics each trainable reports. Without this
a misspelt metric runs a whole sweep that optimises nothing (an Optuna study with every
trial pruned, exit 0).
"""

from __future__ import annotations

import functools
from typing import Any

from headsweep import metrics as M
from headsweep.config import HeadConfig, TrialConfig

# The train/... statistics each kind of trial reports (headsweep.train's epoch report; the
# synthetic runs' progress reports).
CONTRASTIVE_TRAIN: tuple[str, ...] = (
    M.LOSS,
    M.TOTAL_LOSS,
    M.MI,
    M.MI_LOWER,
    M.MI_UPPER,
    M.LR,
    M.THROUGHPUT,
    M.EPOCH_TIME,
    M.STEPS,
)
SYNTHETIC_TRAIN = (M.LOSS, M.STEP)
COMPARED = ("pre", "post", "gap")


@functools.lru_cache(maxsize=64)
def head_taps(head: HeadConfig) -> tuple[str, ...]:
    """The tap names a head produces: built on torch's meta device (no memory, no compute),
    since layer names depend on its depth and kind. Empty when it cannot be built that way."""
    import torch

    from headsweep.heads import TopKSAEHead, build_head

    try:
        with torch.device("meta"):
            built = build_head(64, head)
    except Exception:  # any head the meta device cannot build: no tap check rather than none
        return ()
    extra = ("latents",) if isinstance(built, TopKSAEHead) else ()
    return ("pre", *built.stages.keys(), *extra, "post")


def metric_problem(metric: str, cfg: Any) -> str:
    """ "" when a trial with settings `cfg` reports `metric`, else why not (naming the
    allowed values)."""
    parsed = M.parse(metric)
    if parsed is None:
        return ""  # the trainable's own check has judged names outside the families
    if parsed.kind == "train":
        reported = CONTRASTIVE_TRAIN if isinstance(cfg, TrialConfig) else SYNTHETIC_TRAIN
        if metric not in reported:
            return f"{metric!r} is not reported (train metrics: {', '.join(reported)})"
        return ""
    if not isinstance(cfg, TrialConfig) or parsed.kind not in (
        "probe",
        "online",
        "linear",
        "worst",  # worst-group probes: every head tap and gap, as the final probes
        "average",
        "knn",  # the kNN probe: every head tap and gap, as the final probes
    ):
        return _diagnostic_problem(metric, cfg) if M.is_diagnostic(metric) else ""
    if parsed.kind == "knn" and cfg.probe.knn_k == 0:
        return f"{metric!r} is never reported: the kNN probe is off (probe.knn_k: 0)"
    if parsed.kind == "online":
        if cfg.probe.online_n == 0:
            return f"{metric!r} is never reported: the online probe is off (probe.online_n: 0)"
        allowed: tuple[str, ...] = COMPARED
    elif parsed.kind == "linear":
        le = cfg.probe.linear_eval
        if le.epochs == 0:
            return f"{metric!r} is never reported: probe.linear_eval.epochs is 0"
        allowed = le.taps
    else:
        taps = head_taps(cfg.model.head)
        if not taps:
            return ""
        allowed = (*taps, "gap")
    if parsed.tap not in allowed:
        return f"unknown tap {parsed.tap!r} in {metric!r} (this config has: {', '.join(allowed)})"
    return ""


def _diagnostic_problem(metric: str, cfg: Any) -> str:
    """Representation diagnostics: on when probe.diagnostics, per epoch (online_...) only with
    the online subset; on every head tap, and no gap (they are not accuracies)."""
    if not isinstance(cfg, TrialConfig):
        return f"{metric!r} is never reported: diagnostics are measured by contrastive trials"
    if not cfg.probe.diagnostics:
        return f"{metric!r} is never reported: probe.diagnostics is false"
    parsed = M.parse(metric)
    assert parsed is not None  # is_diagnostic parsed it
    if parsed.kind.startswith("online_") and cfg.probe.online_n == 0:
        return f"{metric!r} is never reported: the online subset is off (probe.online_n: 0)"
    taps = head_taps(cfg.model.head)
    if taps and parsed.tap not in taps:
        return f"unknown tap {parsed.tap!r} in {metric!r} (this config has: {', '.join(taps)})"
    return ""


__all__ = ["head_taps", "metric_problem"]
