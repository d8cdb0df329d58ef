"""Worst-group evaluation of frozen features ([X]'s spurious-correlation setting: Waterbirds,
UrbanCars; the metric of Sagawa et al. 2020): for data whose samples fall into groups (target
label x spurious attribute, `Dataset.group_by`), a linear probe per tap and target is scored by
its average test accuracy and by its accuracy on the worst group of the test split.

Two ways to fit the probe (`probe.worst_group`: off | erm | dfr | both):

- `erm`: the configured probe (`probe.protocol`, `sas` or `ridge` of headsweep.probes) on every
  training row, as the ordinary probes are fitted (few_shot does not apply here).
- `dfr`: Deep Feature Reweighting (Kirichenko, Izmailov, Wilson 2022, "Last layer re-training is
  sufficient for robustness to spurious correlations"): the same probe refitted on a
  group-balanced subset. DFR draws it from held-out data and averages several L1-penalised fits;
  here it is one subset of the training split (the only labelled split a trial has), the same
  number of rows from every group present there (the smallest group's count), drawn with the
  trial seed. A group absent from the training split cannot be balanced and stays absent.

Groups with no test rows are skipped; n_groups counts the groups the test split holds. Group ids
are mixed-radix codes of the `group_by` labels (`group_ids`). Only targets in `group_by` are
scored: the label itself and the spurious attribute, each over the same groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from headsweep.config import ProbeConfig
from headsweep.probes import _standardize, fit_sas_batch, ridge_predict

METHODS = {"off": (), "erm": ("erm",), "dfr": ("dfr",), "both": ("erm", "dfr")}


@dataclass(frozen=True)
class GroupResult:
    """One probe scored over groups: average and worst-group test accuracy."""

    tap: str
    target: str
    method: str  # erm | dfr
    average: float  # accuracy over all test rows
    worst_group: float  # the lowest per-group test accuracy
    n_groups: int  # groups present in the test split
    n_train: int  # rows the probe was fitted on (the balanced subset for dfr)

    def to_dict(self) -> dict:
        return asdict(self)


def group_ids(
    labels: Mapping[str, Tensor], group_by: Sequence[str], classes: Mapping[str, int]
) -> Tensor:
    """int64 (n,) group of each row: the `group_by` labels as one mixed-radix code (the first
    target is the most significant), so (y, place) with 2 classes each gives 2 * y + place."""
    if not group_by:
        raise ValueError("group_ids: no group_by targets (this data has no groups)")
    code = torch.zeros_like(labels[group_by[0]])
    for target in group_by:
        code = code * classes[target] + labels[target]
    return code


def average_and_worst(correct: Tensor, groups: Tensor) -> tuple[float, float, int]:
    """(average accuracy, worst-group accuracy, number of groups) of bool/0-1 (n,) `correct`
    over int64 (n,) `groups`; groups without rows do not count."""
    present, index = torch.unique(groups, return_inverse=True)
    hits = torch.zeros(present.shape[0], dtype=torch.float64, device=correct.device)
    hits.index_add_(0, index, correct.double())
    counts = torch.bincount(index, minlength=present.shape[0]).double()
    per_group = hits / counts
    return correct.double().mean().item(), per_group.min().item(), int(present.shape[0])


def balanced_index(groups: Tensor, generator: torch.Generator) -> Tensor:
    """Sorted indices of a group-balanced subset: from every group present in `groups`, the
    smallest group's count of rows, drawn at random with `generator`."""
    order = torch.randperm(groups.shape[0], generator=generator).to(groups.device)
    shuffled = groups[order]
    present, counts = torch.unique(groups, return_counts=True)
    per_group = int(counts.min().item())
    keep = [order[shuffled == g][:per_group] for g in present]
    return torch.cat(keep).sort().values


def methods_of(mode: str) -> tuple[str, ...]:
    if mode not in METHODS:
        raise ValueError(
            f"probe.worst_group: unknown value {mode!r} (allowed: {', '.join(METHODS)})"
        )
    return METHODS[mode]


def fit_group_probes(
    train: Mapping[str, Tensor],
    test: Mapping[str, Tensor],
    train_labels: Mapping[str, Tensor],
    test_labels: Mapping[str, Tensor],
    classes: Mapping[str, int],
    group_by: Sequence[str],
    cfg: ProbeConfig,
    seed: int = 0,
) -> list[GroupResult]:
    """One probe per tap x target (in group_by and probed) x method. train/test: tap ->
    float (n, d) features; labels: target -> int64 (n,). `sas` probes are fitted as one batch
    (`fit_sas_batch`); rows come back tap-major, then method, then target."""
    methods = methods_of(cfg.worst_group)
    targets = [t for t in (cfg.targets or tuple(classes)) if t in group_by]
    if not methods or not group_by or not targets:
        return []
    train_groups = group_ids(train_labels, group_by, classes)
    test_groups = group_ids(test_labels, group_by, classes)
    subsets: dict[str, Tensor | None] = {"erm": None}
    if "dfr" in methods:
        subsets["dfr"] = balanced_index(train_groups, torch.Generator().manual_seed(seed))
    # (tap, method, target) -> (x_train, y_train, x_test); one x tensor per (tap, method), so
    # consecutive sas problems share its matmuls.
    inputs: dict[tuple[str, str, str], tuple[Tensor, Tensor, Tensor]] = {}
    for tap, features in train.items():
        for method in methods:
            index = subsets[method]
            x_train = features if index is None else features[index]
            x_test = test[tap]
            if cfg.standardize:
                x_train, x_test = _standardize(x_train, x_test)
            for target in targets:
                y = train_labels[target]
                inputs[tap, method, target] = (x_train, y if index is None else y[index], x_test)
    predicted: dict[tuple[str, str, str], Tensor] = {}
    if cfg.protocol == "sas":
        keys = list(inputs)
        fits = fit_sas_batch(
            [(inputs[k][0], inputs[k][1], classes[k[2]]) for k in keys], cfg.penalty, cfg.steps
        )
        for key, fit in zip(keys, fits, strict=True):
            with torch.no_grad():
                predicted[key] = (inputs[key][2].float() @ fit.weight + fit.bias).argmax(1)
    else:
        for key, (x, y, xt) in inputs.items():
            predicted[key] = ridge_predict(x, y, xt, classes[key[2]], cfg.penalty)
    results = []
    for (tap, method, target), prediction in predicted.items():
        correct = prediction == test_labels[target]
        average, worst, n_groups = average_and_worst(correct, test_groups)
        n_train = inputs[tap, method, target][0].shape[0]
        results.append(GroupResult(tap, target, method, average, worst, n_groups, n_train))
    return results
