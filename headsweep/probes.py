"""Frozen-feature probes (docs/science.md §5): features of every tap extracted once with the model
in eval mode and no gradient, then one linear probe per tap and target, scored on a held-out split.

Protocols (`PROTOCOLS`, keyed by `probe.protocol`):

- `sas`: SAS's `train_clf` ([X]): multinomial logistic regression, objective
  mean CE + penalty * ||W||^2 (no 1/2, bias unpenalised), minimised by full-batch L-BFGS in
  float32 until the relative change of the objective falls below `SAS_RTOL` (at most
  `probe.steps` iterations). SAS itself calls torch's L-BFGS 500 times with its defaults (20
  iterations each, no line search) from a random start; the objective is strictly convex, so
  every converged solver reaches the same minimiser. Since issue 12 all probes of a trial are
  fitted together by `headsweep.batched_lbfgs` (per-problem L-BFGS in lockstep, on centred,
  partially whitened features: a change of variables, not of objective); before, each probe
  ran torch.optim.LBFGS (strong Wolfe) on the raw features. Same optimum, so the protocol
  name did not change; tests/test_probes.py checks both against scipy in float64.
- `ridge`: closed-form ridge regression on one-hot targets, mean squared error +
  penalty * ||W||^2.

Both are scale-sensitive on purpose: an unregularised probe cannot see the feature reweighting
that separates pre from post. The protocol string (`protocol_name`) travels with every result,
because standardising features removes part of the pre/post effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headsweep.batched_lbfgs import Problem, minimise
from headsweep.config import ProbeConfig

# Stop when |f_prev - f| <= SAS_RTOL * max(|f_prev|, |f|); in float32 this is "the objective
# no longer changes", so the probe is as converged as float32 allows.
SAS_RTOL = 1e-9


@dataclass(frozen=True)
class ProbeResult:
    tap: str
    target: str
    accuracy: float
    protocol: str
    dim: int
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BN uses, and never updates, its running statistics) and no gradients; the
    previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def extract(
    encode: Callable[[Tensor], dict[str, Tensor]],
    inputs: Callable[[int, int], Tensor],
    n: int,
    batch_size: int,
) -> dict[str, Tensor]:
    """Run `encode` (a frozen model returning taps) over n examples in batches;
    `inputs(start, stop)` builds a batch. Returns tap -> float32 (n, d) features."""
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, n, batch_size):
        taps = encode(inputs(start, min(n, start + batch_size)))
        for name, value in taps.items():
            parts.setdefault(name, []).append(value.float())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def few_shot_index(labels: Tensor, per_class: int, generator: torch.Generator) -> Tensor:
    """Indices of `per_class` random examples of each class (fewer if a class is smaller)."""
    order = torch.randperm(labels.shape[0], generator=generator).to(labels.device)
    shuffled = labels[order]
    keep = []
    for cls in torch.unique(labels):
        keep.append(order[shuffled == cls][:per_class])
    return torch.cat(keep).sort().values


def _standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


# --------------------------------------------------------------------------- ridge


def ridge_accuracy(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, classes: int, penalty: float
) -> float:
    """Closed-form ridge on centred one-hot targets: W = (X^T X + penalty n I)^-1 X^T Y,
    solved in float64 (in the dual when there are more features than examples)."""
    predicted = ridge_predict(x_train, y_train, x_test, classes, penalty)
    return (predicted == y_test).double().mean().item()


def ridge_predict(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, classes: int, penalty: float
) -> Tensor:
    """The classes `ridge_accuracy`'s probe predicts for x_test: int64 (n_test,). Leading batch
    dimensions fit independent probes at once: x_train (..., n, d), y_train (..., n), x_test
    (n_test, d) or (..., n_test, d) -> (..., n_test)."""
    x, xt = x_train.double(), x_test.double()
    mean = x.mean(-2, keepdim=True)
    x, xt = x - mean, xt - mean
    y = F.one_hot(y_train, classes).double()
    prior = y.mean(-2, keepdim=True)  # the intercept: class frequencies, unpenalised
    y = y - prior
    n, d = x.shape[-2:]
    reg = penalty * n + 1e-10
    if d <= n:
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        w = torch.linalg.solve(x.mT @ x + reg * eye, x.mT @ y)
    else:
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        w = x.mT @ torch.linalg.solve(x @ x.mT + reg * eye, y)
    return (xt @ w + prior).argmax(-1)


# --------------------------------------------------------------------------- sas


@dataclass(frozen=True)
class LogisticFit:
    weight: Tensor  # (d, classes)
    bias: Tensor  # (classes,)
    objective: float  # mean CE + penalty ||W||^2 at (weight, bias)
    iterations: int
    converged: bool  # the relative-change criterion fired before the iteration cap

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        with torch.no_grad():
            return ((x.float() @ self.weight + self.bias).argmax(1) == y).double().mean().item()


def sas_objective(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, penalty: float) -> Tensor:
    """SAS's `train_clf` objective: mean cross-entropy + penalty * ||W||^2 (no 1/2)."""
    return F.cross_entropy(x @ weight + bias, y) + penalty * weight.pow(2).sum()


def fit_sas(
    x: Tensor,
    y: Tensor,
    classes: int,
    penalty: float,
    max_iter: int,
    rtol: float = SAS_RTOL,
) -> LogisticFit:
    """Minimise `sas_objective` from W = 0, b = 0 by full-batch L-BFGS in float32 until the
    objective's relative change per iteration is <= rtol, or max_iter (one probe of
    `fit_sas_batch`)."""
    return fit_sas_batch([(x, y, classes)], penalty, max_iter, rtol)[0]


def fit_sas_batch(
    problems: list[tuple[Tensor, Tensor, int]],
    penalty: float,
    max_iter: int,
    rtol: float = SAS_RTOL,
) -> list[LogisticFit]:
    """`fit_sas` for many (x, y, classes) at once: the objectives are separable, so each probe
    gets its own L-BFGS (history, steps, stopping rule) while the tensor work is shared;
    consecutive problems passing the same `x` tensor share its matmuls."""
    solved = minimise([Problem(x, y, k) for x, y, k in problems], penalty, max_iter, rtol)
    return [LogisticFit(s.weight, s.bias, s.objective, s.iterations, s.converged) for s in solved]


def sas_accuracy(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    classes: int,
    penalty: float,
    steps: int,
) -> float:
    """Test accuracy of the `sas` probe (see `fit_sas`)."""
    return fit_sas(x_train, y_train, classes, penalty, steps).accuracy(x_test, y_test)


# --------------------------------------------------------------------------- protocols

ProbeFn = Callable[[Tensor, Tensor, Tensor, Tensor, int, ProbeConfig], float]

PROTOCOLS: dict[str, ProbeFn] = {
    "sas": lambda x, y, xt, yt, k, c: sas_accuracy(x, y, xt, yt, k, c.penalty, c.steps),
    "ridge": lambda x, y, xt, yt, k, c: ridge_accuracy(x, y, xt, yt, k, c.penalty),
}

_SOLVER = {
    "sas": lambda c: f"lbfgs,max_iter={c.steps},rtol={SAS_RTOL:g}",
    "ridge": lambda c: "closed_form",
}


def protocol_name(cfg: ProbeConfig) -> str:
    """The exact protocol, e.g.
    sas(reg=0.001,lbfgs,max_iter=500,rtol=1e-09,standardize=False,few_shot=0); `reg` multiplies
    ||W||^2 with no 1/2 in both protocols."""
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(
            f"probe.protocol: unknown protocol {cfg.protocol!r} (allowed: {', '.join(PROTOCOLS)})"
        )
    return (
        f"{cfg.protocol}(reg={cfg.penalty:g},{_SOLVER[cfg.protocol](cfg)},"
        f"standardize={cfg.standardize},few_shot={cfg.few_shot})"
    )


def fit_probes(
    train: dict[str, Tensor],
    test: dict[str, Tensor],
    train_labels: dict[str, Tensor],
    test_labels: dict[str, Tensor],
    classes: dict[str, int],
    cfg: ProbeConfig,
    seed: int = 0,
) -> list[ProbeResult]:
    """One probe per tap x target. train/test: tap -> (n, d) features; labels: target -> (n,).
    `sas` probes are fitted as one batch (`fit_sas_batch`), tap-major so that the targets of a
    tap share its feature matrix; rows come back target-major as before."""
    protocol = protocol_name(cfg)
    targets = list(cfg.targets) or list(classes)
    for target in targets:
        if target not in classes:
            raise ValueError(
                f"probe.targets: unknown target {target!r} (this dataset has: {', '.join(classes)})"
            )
    indices: dict[str, Tensor | None] = {
        target: few_shot_index(
            train_labels[target], cfg.few_shot, torch.Generator().manual_seed(seed)
        )
        if cfg.few_shot
        else None
        for target in targets
    }
    # (tap, target) -> probe inputs; one tensor object per tap when every target uses all rows.
    inputs: dict[tuple[str, str], tuple[Tensor, Tensor, Tensor, Tensor]] = {}
    for tap, features in train.items():
        shared: tuple[Tensor, Tensor] | None = None
        for target in targets:
            index = indices[target]
            y_train = train_labels[target] if index is None else train_labels[target][index]
            if index is None and shared is not None:
                x_train, x_test = shared
            else:
                x_train = features if index is None else features[index]
                x_test = test[tap]
                if cfg.standardize:
                    x_train, x_test = _standardize(x_train, x_test)
                if index is None:
                    shared = (x_train, x_test)
            inputs[tap, target] = (x_train, y_train, x_test, test_labels[target])
    accuracy: dict[tuple[str, str], float] = {}
    if cfg.protocol == "sas":
        keys = list(inputs)
        fits = fit_sas_batch(
            [(inputs[k][0], inputs[k][1], classes[k[1]]) for k in keys], cfg.penalty, cfg.steps
        )
        for key, fit in zip(keys, fits, strict=True):
            accuracy[key] = fit.accuracy(inputs[key][2], inputs[key][3])
    else:
        for (tap, target), (x, y, xt, yt) in inputs.items():
            accuracy[tap, target] = PROTOCOLS[cfg.protocol](x, y, xt, yt, classes[target], cfg)
    return [
        ProbeResult(
            tap,
            target,
            accuracy[tap, target],
            protocol,
            inputs[tap, target][0].shape[1],
            inputs[tap, target][0].shape[0],
            inputs[tap, target][2].shape[0],
        )
        for target in targets
        for tap in train
    ]
