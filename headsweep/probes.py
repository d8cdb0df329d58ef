"""Frozen-feature probes (SCIENCE.md §5): features of every tap extracted once with the model in
eval mode and no gradient, then one linear probe per tap and target, scored on a held-out split.

Protocols: multinomial logistic regression with an L2 penalty fitted by full-batch L-BFGS (the
SAS protocol of [X]: 500 steps, penalty 1e-3, no standardisation) and closed-form ridge
regression on one-hot targets. Both are scale-sensitive on purpose: an unregularised probe cannot
see the feature reweighting that separates pre from post. The protocol string travels with
every result, because standardising features removes part of the pre/post effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headsweep.config import ProbeConfig


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


def protocol_name(cfg: ProbeConfig) -> str:
    extra = f",steps={cfg.steps}" if cfg.protocol == "logistic" else ""
    return (
        f"{cfg.protocol}(l2={cfg.penalty:g}{extra},standardize={cfg.standardize},"
        f"few_shot={cfg.few_shot})"
    )


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


def logistic_accuracy(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    classes: int,
    penalty: float,
    steps: int,
) -> float:
    """Multinomial logistic regression, loss = mean CE + penalty/2 ||W||^2, full-batch L-BFGS."""
    with torch.enable_grad():
        w = torch.zeros(x_train.shape[1], classes, device=x_train.device, requires_grad=True)
        b = torch.zeros(classes, device=x_train.device, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1,
            max_iter=steps,
            history_size=20,
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(x_train @ w + b, y_train) + 0.5 * penalty * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        return ((x_test @ w + b).argmax(1) == y_test).float().mean().item()


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
            if cfg.protocol == "ridge":
                acc = ridge_accuracy(x_train, y_train, x_test, y_test, classes[target], cfg.penalty)
            else:
                acc = logistic_accuracy(
                    x_train, y_train, x_test, y_test, classes[target], cfg.penalty, cfg.steps
                )
            results.append(
                ProbeResult(
                    tap,
                    target,
                    acc,
                    protocol_name(cfg),
                    x_train.shape[1],
                    x_train.shape[0],
                    x_test.shape[0],
                )
            )
    return results
