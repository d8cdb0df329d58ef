"""Metric names: the one place that builds *and parses* the strings reports, MLflow and Parquet
columns carry.

A name belongs to one family of `FAMILIES` (a template such as ``probe/{target}/{tap}``);
`parse(name)` turns it back into a `Metric` (kind, target, tap, stat) and `Metric.name` builds
it, so no other module splits or matches a metric string. Every registered name round-trips
(tests/test_metrics.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """A kind of metric: its name template and how reports and tables treat it."""

    template: str  # fields in braces: target, tap, stat
    per_epoch: bool = False  # reported every epoch (schedulers may watch it)
    column: bool = True  # a value column of the tables (epoch is a key column instead)
    description: str = ""

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = re.escape(self.template)
        for field in ("target", "tap", "stat"):
            regex = regex.replace(re.escape("{" + field + "}"), f"(?P<{field}>[^/]+?)")
        return re.compile(f"^{regex}$")


FAMILIES: dict[str, Family] = {
    "epoch": Family("epoch", per_epoch=True, column=False, description="epochs done (1-based)"),
    "train": Family("train/{stat}", per_epoch=True, description="training objective and speed"),
    "online": Family(
        "online/{target}/{tap}", per_epoch=True, description="cheap per-epoch ridge probe"
    ),
    "probe": Family("probe/{target}/{tap}", description="final frozen-feature probe accuracy"),
    "linear": Family("linear/{target}/{tap}", description="[O]'s linear evaluation accuracy"),
    "knn": Family("knn/{target}/{tap}", description="weighted kNN probe accuracy (headsweep.knn)"),
    # Representation diagnostics (headsweep.diagnostics): exact on the full test split at the
    # end; the online_ names are the per-epoch estimates on the online probe's subset (a
    # different sample, so a different name: a scheduler never compares the two).
    "rank": Family("rank/{tap}", description="effective rank (RankMe) of a tap's features"),
    "align": Family("align/{tap}", description="alignment of two views' features (Wang & Isola)"),
    "uniform": Family("uniform/{tap}", description="uniformity of a tap's features (Wang & Isola)"),
    "online_rank": Family(
        "online_rank/{tap}", per_epoch=True, description="effective rank, online subset"
    ),
    "online_align": Family(
        "online_align/{tap}", per_epoch=True, description="alignment, online subset"
    ),
    "online_uniform": Family(
        "online_uniform/{tap}", per_epoch=True, description="uniformity, online subset"
    ),
    # Data with groups (headsweep.groups): stat is the fitting method (erm | dfr); tap may
    # be gap (pre - post).
    "worst": Family("worst/{target}/{tap}/{stat}", description="worst-group test accuracy"),
    "average": Family(
        "average/{target}/{tap}/{stat}", description="average test accuracy of a group probe"
    ),
    "dim": Family("dim/{tap}", description="feature dimension of a head tap"),
    "time": Family("time/{stat}", description="seconds spent in a phase of the trial"),
    "resources": Family("resources/{stat}", description="CPUs / GPUs Tune granted the trial"),
    "weight": Family("synthetic/{tap}_weight/{target}", description="feature weight (synthetic)"),
    "weight_norm": Family(
        "synthetic/{tap}_weight_norm/{target}", description="feature weight / max (synthetic)"
    ),
    "synthetic": Family("synthetic/{stat}", description="theory-model measurement"),
    # Written by the analysis to a sweep's parent run.
    "gap_summary": Family("gap/{target}/{stat}", description="max / mean of a gap table"),
    "best": Family("pre/{target}/{stat}", description="best pre accuracy of a gap table"),
    "trials": Family("trials/{stat}", description="trials of a sweep by status"),
    "health": Family(
        "health/{stat}", description="did the trial train (headsweep.health, docs/science.md §11)"
    ),
}
_PATTERNS = [(kind, family.pattern) for kind, family in FAMILIES.items()]
PROBE_KINDS = ("probe", "online", "linear", "knn")  # accuracy per target and tap, with a gap


@dataclass(frozen=True)
class Metric:
    """A parsed metric name. kind: a key of FAMILIES; target: a label target (or a feature
    index for the synthetic weights); tap: pre, post, gap or a head layer; stat: the quantity
    of a scalar family (loss, slope, cpu, ...)."""

    kind: str
    target: str = ""
    tap: str = ""
    stat: str = ""

    @property
    def name(self) -> str:
        return FAMILIES[self.kind].template.format(target=self.target, tap=self.tap, stat=self.stat)

    @property
    def family(self) -> Family:
        return FAMILIES[self.kind]


def parse(name: str) -> Metric | None:
    """The Metric a name stands for, or None when no family matches (e.g. Tune's bookkeeping
    keys such as time_total_s)."""
    for kind, pattern in _PATTERNS:
        match = pattern.match(name)
        if match:
            return Metric(kind, **match.groupdict())
    return None


def kind_of(name: str) -> str:
    metric = parse(name)
    return metric.kind if metric else ""


# --------------------------------------------------------------------------- builders

EPOCH = "epoch"
LOSS = "train/loss"  # pretraining objective, without the regulariser
TOTAL_LOSS = "train/total_loss"  # objective + mi_lambda * I_alpha
# I_2 and its bounds: epoch means over steps 0, k, 2k, ... (k = train.metrics_every).
MI = "train/mi"  # I_2 between encoder and head features [O]
MI_LOWER = "train/mi_lower"  # -(the method's loss on encoder features) - I_2 [O]
MI_UPPER = "train/mi_upper"  # H_2(K_encoder) - I_2 [O]
LR = "train/lr"
THROUGHPUT = "train/images_per_s"  # views per second through forward + backward
EPOCH_TIME = "train/epoch_s"
STEPS = "train/steps"  # optimiser steps so far: budgets compare in steps, not epochs (§9)
STEP = "train/step"  # the synthetic model's step at a progress report
GRAD_NORM_MAX = "train/grad_norm_max"  # the epoch's largest finite gradient norm of a step
NONFINITE_STEPS = "train/nonfinite_steps"  # the epoch's steps with a non-finite gradient norm
# Training health at the end of a trial (headsweep.health).
HEALTH_LOSS_RATIO = "health/loss_ratio"  # final loss / a constant head's loss
HEALTH_GRAD_MAX = "health/grad_norm_max"  # the largest finite gradient norm of any step
HEALTH_NONFINITE = "health/nonfinite_steps"  # steps with a non-finite gradient norm
HEALTH_DEAD_CHANNELS = "health/dead_channels"  # share of encoder channels with no variance
HEALTH_DEAD_FILTERS = "health/dead_filters"  # worst encoder layer's share of dead filters
SLOPE = "synthetic/slope"  # log-log slope of pre against post feature weight (T1: 0.5)
BALANCEDNESS = "synthetic/balancedness"  # ||W1 W1^T - W2^T W2||_F / ||W1 W1^T||_F
OPTIMAL_LOSS = "synthetic/optimal_loss"  # closed-form minimum of the linear model

# Keys a trainable's report carries that are not metrics.
RESUMED_FROM = "resumed_from_epoch"  # the epoch a resumed trial picked up at (0 = fresh)
DONE = "done"  # 1 on the final report only
NODE_ID = "node_id"  # the Ray node a trial ran on (a string: never an MLflow metric)


def probe(target: str, tap: str) -> str:
    """Final frozen-feature probe accuracy: tap is pre, post, gap (pre - post) or a layer."""
    return Metric("probe", target, tap).name


def online(target: str, tap: str) -> str:
    """Per-epoch ridge probe on a fixed subset (cheap; what schedulers and searchers watch)."""
    return Metric("online", target, tap).name


def linear_eval(target: str, tap: str) -> str:
    """[O]'s linear evaluation: a linear classifier trained on augmented frozen features."""
    return Metric("linear", target, tap).name


def knn(target: str, tap: str) -> str:
    """Final weighted kNN probe accuracy: tap is pre, post, gap (pre - post) or a layer."""
    return Metric("knn", target, tap).name


DIAGNOSTICS = ("rank", "align", "uniform")  # the kinds of headsweep.diagnostics, final names


def rank(tap: str, online: bool = False) -> str:
    """Effective rank of a tap: rank/<tap> (test split), online_rank/<tap> (per epoch)."""
    return Metric("online_rank" if online else "rank", tap=tap).name


def align(tap: str, online: bool = False) -> str:
    """Alignment of a tap: align/<tap> (test split), online_align/<tap> (per epoch)."""
    return Metric("online_align" if online else "align", tap=tap).name


def uniform(tap: str, online: bool = False) -> str:
    """Uniformity of a tap: uniform/<tap> (test split), online_uniform/<tap> (per epoch)."""
    return Metric("online_uniform" if online else "uniform", tap=tap).name


def is_diagnostic(name: str) -> bool:
    """A representation diagnostic, final or per epoch."""
    metric = parse(name)
    return bool(metric and metric.kind.removeprefix("online_") in DIAGNOSTICS)


def worst_group(target: str, tap: str, method: str) -> str:
    """Worst-group test accuracy of the group probe fitted by `method` (erm | dfr)."""
    return Metric("worst", target, tap, method).name


def group_average(target: str, tap: str, method: str) -> str:
    """Average test accuracy of the group probe fitted by `method` (erm | dfr)."""
    return Metric("average", target, tap, method).name


def dim(tap: str) -> str:
    """Feature dimension of a tap (a column of the trials table)."""
    return Metric("dim", tap=tap).name


def time(phase: str) -> str:
    """Seconds spent in a phase (data_s, train_s, probe_s, total_s)."""
    return Metric("time", stat=phase).name


def resources(kind: str) -> str:
    """CPUs or GPUs Tune granted (cpu, gpu)."""
    return Metric("resources", stat=kind).name


def weight(layer: str, k: int, normalised: bool = False) -> str:
    """`synthetic/{pre|post}_weight[_norm]/{k}`: feature k's weight in that layer."""
    return Metric("weight_norm" if normalised else "weight", str(k), layer).name


def gap_summary(target: str, stat: str) -> str:
    """Parent-run headline: the max or mean of the gap table's gap_mean for a target."""
    return Metric("gap_summary", target, stat=stat).name


def best_pre(target: str) -> str:
    return Metric("best", target, stat="best").name


def trial_count(status: str) -> str:
    return Metric("trials", stat=status).name


# --------------------------------------------------------------------------- questions


def per_epoch(name: str) -> bool:
    """Reported every epoch (what ASHA can watch), as opposed to only at the end."""
    metric = parse(name)
    return bool(metric and metric.family.per_epoch)


def is_value(name: str) -> bool:
    """A metric that becomes a value column of the tables (not Tune's or the report's own
    bookkeeping keys, and not the epoch, which is a key column)."""
    metric = parse(name)
    return bool(metric and metric.family.column)


def with_tap(name: str, tap: str) -> str:
    """The same probe-like metric at another tap (probe/digit/pre -> probe/digit/post), or ""
    when `name` has no tap."""
    metric = parse(name)
    if metric is None or metric.kind not in PROBE_KINDS:
        return ""
    return Metric(metric.kind, metric.target, tap).name


def partner(name: str) -> str:
    """The post metric beside a pre one (what progress lines show next to it), else ""."""
    metric = parse(name)
    return with_tap(name, "post") if metric is not None and metric.tap == "pre" else ""


def probe_target(name: str) -> str:
    """The target of a final probe metric, else ""."""
    metric = parse(name)
    return metric.target if metric is not None and metric.kind == "probe" else ""


def is_gap(name: str) -> bool:
    metric = parse(name)
    return bool(metric and metric.tap == "gap" and metric.kind in PROBE_KINDS)


def weight_columns(columns: Iterable[str], layer: str, normalised: bool = False) -> list[str]:
    """The feature-weight columns of one layer among `columns`, ordered by feature index."""
    kind = "weight_norm" if normalised else "weight"
    found = []
    for column in columns:
        metric = parse(column)
        if metric is not None and metric.kind == kind and metric.tap == layer:
            found.append((int(metric.target), column))
    return [column for _, column in sorted(found)]


def feature_index(name: str) -> int:
    """k of a synthetic weight metric."""
    metric = parse(name)
    if metric is None or metric.kind not in ("weight", "weight_norm"):
        raise ValueError(f"{name!r} is not a synthetic feature-weight metric")
    return int(metric.target)


__all__ = [
    "DIAGNOSTICS",
    "FAMILIES",
    "PROBE_KINDS",
    "Family",
    "Metric",
    "align",
    "dim",
    "group_average",
    "is_diagnostic",
    "knn",
    "linear_eval",
    "online",
    "parse",
    "partner",
    "per_epoch",
    "probe",
    "rank",
    "uniform",
    "weight",
    "with_tap",
    "worst_group",
]
