"""Frozen-feature probes (docs/science.md §5): features of every tap extracted once with the model
in eval mode and no gradient, then one linear probe per tap and target, scored on a held-out split.

Protocols (`PROTOCOLS`, keyed by `probe.protocol`):

- `sas`: SAS's `train_clf` ([X]): multinomial logistic regression, objective
  mean CE + penalty * ||W||^2 (no 1/2, bias unpenalised), full-batch L-BFGS with a strong-Wolfe
  line search in float32, run until the relative change of the objective falls below
  `SAS_RTOL` (at most `probe.steps` iterations). SAS itself calls torch's L-BFGS 500 times
  with its defaults (20 iterations each, no line search) from a random start; the objective is
  strictly convex, so both reach the same minimiser.
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

from headsweep.config import ProbeConfig

# Stop when |f_prev - f| <= SAS_RTOL * max(|f_prev|, |f|); in float32 this is "the objective
# no longer changes", so the probe is as converged as float32 allows.
SAS_RTOL = 1e-9
# Strong-Wolfe line search: at most this many function evaluations per iteration (torch's 25).
_MAX_LINE_SEARCH = 25


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
    x, xt = x_train.double(), x_test.double()
    mean = x.mean(0)
    x, xt = x - mean, xt - mean
    y = F.one_hot(y_train, classes).double()
    prior = y.mean(0)  # the intercept: class frequencies, unpenalised
    y = y - prior
    n, d = x.shape
    reg = penalty * n + 1e-10
    if d <= n:
        w = torch.linalg.solve(
            x.T @ x + reg * torch.eye(d, dtype=x.dtype, device=x.device), x.T @ y
        )
    else:
        w = x.T @ torch.linalg.solve(
            x @ x.T + reg * torch.eye(n, dtype=x.dtype, device=x.device), y
        )
    return ((xt @ w + prior).argmax(1) == y_test).double().mean().item()


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
    """Minimise `sas_objective` from W = 0, b = 0 by full-batch L-BFGS (strong Wolfe) in
    float32 until the objective's relative change per iteration is <= rtol, or max_iter.

    torch's L-BFGS is stepped one iteration at a time so the stopping rule is ours; its state
    (curvature history) carries over between steps. The closure remembers the last point it
    evaluated, so the value the line search computed at the accepted point is not recomputed."""
    x = x.float()
    with torch.enable_grad():
        weight = torch.zeros(x.shape[1], classes, device=x.device, requires_grad=True)
        bias = torch.zeros(classes, device=x.device, requires_grad=True)
        params = [weight, bias]
        opt = torch.optim.LBFGS(
            params,
            lr=1,
            max_iter=1,
            max_eval=1 + _MAX_LINE_SEARCH,
            history_size=100,
            tolerance_grad=0.0,  # the relative-change rule decides
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )
        cache: dict[str, object] = {}

        def closure() -> Tensor:
            point = torch.cat([p.detach().reshape(-1) for p in params])
            if "point" in cache and torch.equal(point, cache["point"]):  # type: ignore[arg-type]
                for p, g in zip(params, cache["grads"], strict=True):  # type: ignore[call-overload]
                    p.grad = g.clone()
                return cache["loss"]  # type: ignore[return-value]
            opt.zero_grad()
            loss = sas_objective(x, y, weight, bias, penalty)
            loss.backward()
            cache.update(
                point=point,
                loss=loss.detach(),
                grads=[p.grad.detach().clone() for p in params if p.grad is not None],
            )
            return loss

        previous = current = float(closure().detach())
        iterations, converged = 0, False
        while iterations < max_iter:
            opt.step(closure)
            iterations += 1
            current = float(closure().detach())
            if abs(previous - current) <= rtol * max(abs(previous), abs(current)):
                converged = True
                break
            previous = current
    return LogisticFit(weight.detach(), bias.detach(), current, iterations, converged)


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
    """One probe per tap x target. train/test: tap -> (n, d) features; labels: target -> (n,)."""
    protocol = protocol_name(cfg)
    probe = PROTOCOLS[cfg.protocol]
    targets = list(cfg.targets) or list(classes)
    results = []
    for target in targets:
        if target not in classes:
            raise ValueError(
                f"probe.targets: unknown target {target!r} (this dataset has: {', '.join(classes)})"
            )
        y_train, y_test = train_labels[target], test_labels[target]
        index = None
        if cfg.few_shot:
            index = few_shot_index(y_train, cfg.few_shot, torch.Generator().manual_seed(seed))
            y_train = y_train[index]
        for tap, x_train in train.items():
            x_test = test[tap]
            if index is not None:
                x_train = x_train[index]
            if cfg.standardize:
                x_train, x_test = _standardize(x_train, x_test)
            acc = probe(x_train, y_train, x_test, y_test, classes[target], cfg)
            results.append(
                ProbeResult(
                    tap,
                    target,
                    acc,
                    protocol,
                    x_train.shape[1],
                    x_train.shape[0],
                    x_test.shape[0],
                )
            )
    return results
