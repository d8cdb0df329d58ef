"""Few-shot curves in one trial: probe accuracy against the number of labelled examples per
class, on the frozen features `final_probes` already extracted (docs/science.md §5, "optional
few-shot subsets").

For every n of `probe.few_shot_curve` (0 = every training example) and every one of
`probe.few_shot_subsets` random subsets, the configured probe (`probe.protocol`, penalty,
standardisation) is fitted on exactly n training examples of each class and scored on the full
test split, on the pre and post taps (the comparison the curve is for; the head's inner
layers would add cost, an SAE's 8,192 latents most of all) and every target. All `sas` probes
of one n are fitted together by `fit_sas_batch`, each on its subset's features expressed
in the row space of the subset (`row_space`): with fewer examples than dimensions the L2
penalised optimum lies in that space, so the fit is the same and its whitening and matmuls
shrink from d to at most n dimensions.

Subsets are seeded from the trial seed: subset s of every n comes from the s-th draw of one
generator, so it is nested in subset s of every larger n (the curve's points share examples,
which makes it smoother than independent draws) and subset 0 is the training set of a main
probe with `probe.few_shot = n`. Every tap sees the same subsets, so pre and post are paired.
An n larger than a target's smallest class is left out of its curve with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from headsweep.config import ProbeConfig
from headsweep.probes import _standardize, few_shot_index, fit_sas_batch, ridge_accuracy

log = logging.getLogger(__name__)

CURVE_TAPS = ("pre", "post")
# Singular values below this fraction of the largest span no direction of the row space.
RANK_RTOL = 1e-6


@dataclass(frozen=True)
class FewShotResult:
    tap: str
    target: str
    shots: int  # labelled training examples per class (0 = all of them)
    subset: int  # which random subset (0-based; always 0 for shots = 0)
    accuracy: float  # on the full test split

    def to_dict(self) -> dict:
        return asdict(self)


def balanced_subsets(labels: Tensor, shots: int, subsets: int, seed: int) -> list[Tensor]:
    """`subsets` sorted index sets, each with exactly `shots` examples of every class present
    in `labels`; the s-th set of a seed is the same for every `shots` up to its size (nested).
    Raises ValueError when a class has fewer than `shots` examples."""
    counts = torch.unique(labels, return_counts=True)
    smallest = int(counts[1].min())
    if shots > smallest:
        cls = int(counts[0][counts[1].argmin()])
        raise ValueError(
            f"probe.few_shot_curve: {shots} shots per class, but class {cls} has only "
            f"{smallest} training examples (lower the shots or raise data.n_train)"
        )
    generator = torch.Generator().manual_seed(seed)
    return [few_shot_index(labels, shots, generator) for _ in range(subsets)]


def few_shot_curve(
    train: Mapping[str, Tensor],
    test: Mapping[str, Tensor],
    train_labels: Mapping[str, Tensor],
    test_labels: Mapping[str, Tensor],
    classes: Mapping[str, int],
    cfg: ProbeConfig,
    seed: int,
    all_shots: Mapping[tuple[str, str], float] | None = None,
) -> list[FewShotResult]:
    """One row per tap x target x n x subset. train/test: tap -> (n, d) features; labels:
    target -> (n,). all_shots: (tap, target) -> accuracy of the probe already fitted on every
    training example with this protocol, reused for n = 0 instead of fitting it again."""
    targets = list(cfg.targets) or list(classes)
    # (tap, target, shots, subset) -> training rows (None: all of them)
    plan: dict[tuple[str, str, int, int], Tensor | None] = {}
    reused: dict[tuple[str, str, int, int], float] = {}
    for target in targets:
        smallest = int(torch.unique(train_labels[target], return_counts=True)[1].min())
        for shots in cfg.few_shot_curve:
            if shots > smallest:
                # a point this training set cannot give (e.g. a --smoke run's 256 images):
                # left out of the curve, rather than failing the trial's other measurements
                log.warning(
                    "probe.few_shot_curve: %d shots per class skipped for target %r (its "
                    "smallest class has %d training examples)",
                    shots,
                    target,
                    smallest,
                )
                continue
            draws: list[Tensor | None] = (
                [None]
                if shots == 0
                else list(balanced_subsets(train_labels[target], shots, cfg.few_shot_subsets, seed))
            )
            for tap in [t for t in CURVE_TAPS if t in train]:
                for subset, index in enumerate(draws):
                    key = (tap, target, shots, subset)
                    if shots == 0 and all_shots is not None and (tap, target) in all_shots:
                        reused[key] = all_shots[tap, target]
                    else:
                        plan[key] = index
    inputs = {}
    for key, index in plan.items():
        tap, target = key[0], key[1]
        x = train[tap] if index is None else train[tap][index]
        y = train_labels[target] if index is None else train_labels[target][index]
        x_test = test[tap]
        if cfg.standardize:  # with the statistics of the probe's own training subset
            x, x_test = _standardize(x, x_test)
        inputs[key] = (x, y, x_test)
    accuracy = dict(reused)
    for shots in cfg.few_shot_curve if cfg.protocol == "sas" else ():
        # One batch per n: the batch's problems run in lockstep and every backtracking step
        # of one re-evaluates all, so similar sizes go together (measured on quickstart
        # features: 4.5 s per curve in four batches, 12 s in one).
        keys = [k for k in inputs if k[2] == shots]
        reduced = [row_space(inputs[k][0], inputs[k][2]) for k in keys]
        problems = [
            (x, inputs[k][1], classes[k[1]]) for k, (x, _) in zip(keys, reduced, strict=True)
        ]
        fits = fit_sas_batch(problems, cfg.penalty, cfg.steps) if problems else []
        for key, fit, (_, x_test) in zip(keys, fits, reduced, strict=True):
            accuracy[key] = fit.accuracy(x_test, test_labels[key[1]])
    if cfg.protocol != "sas":
        for key, (x, y, x_test) in inputs.items():
            accuracy[key] = ridge_accuracy(
                x, y, x_test, test_labels[key[1]], classes[key[1]], cfg.penalty
            )
    return [FewShotResult(*key, accuracy[key]) for key in sorted(accuracy, key=_order(train))]


def row_space(x: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    """(x V, x_test V) for V (d, r) an orthonormal basis of the row space of the centred
    (n, d) training features, when r < d; else the features unchanged. The penalised
    logistic optimum has W = V B: its gradient condition makes W a combination of centred
    training rows (the bias absorbs the mean), and ||V B|| = ||B||, so fitting B on x V
    reaches the same objective and the same test logits."""
    n, d = x.shape
    if n - 1 >= d:
        return x, x_test
    centred = (x - x.mean(0)).double()
    _, sigma, vh = torch.linalg.svd(centred, full_matrices=False)
    basis = vh[sigma > RANK_RTOL * sigma.max().clamp_min(1e-30)].T.to(x.dtype)
    return x @ basis, x_test @ basis


def _order(train: Mapping[str, Tensor]):
    """Rows target-major, taps in the trial's order (pre, layers, post), then shots, subset."""
    taps = list(train)
    return lambda key: (key[1], taps.index(key[0]), key[2] == 0, key[2], key[3])


__all__ = ["CURVE_TAPS", "FewShotResult", "balanced_subsets", "few_shot_curve", "row_space"]
