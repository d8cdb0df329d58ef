"""Weighted k-nearest-neighbour probe on frozen features: the non-parametric monitor of
self-supervised learning (Wu et al. 2018, "Unsupervised feature learning via non-parametric
instance discrimination", and the kNN monitors of solo-learn and lightly that follow it).

A test example's k most cosine-similar training examples vote for their class with weight
exp(similarity / T); the class with the largest total wins. Unlike the linear probes it has no
fitted weights, so it cannot reweight features: it reads the geometry of the tap as it is.

Fast by construction: the training features are L2-normalised once, then each chunk of test
rows is one matmul against them and one `topk`; the neighbours of a tap are found once and vote
for every target. Ties: among equally similar neighbours at the k-th place `topk` picks any;
between classes with equal votes the lowest class index wins (torch.argmax returns the first
maximum).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from headsweep import metrics as M
from headsweep.config import ProbeConfig

# Similarities held at once per chunk of test rows: (chunk, n_train) float32, 128 MiB.
CHUNK_ELEMENTS = 1 << 25


def neighbours(train: Tensor, test: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k (capped at n_train) most cosine-similar training rows of each test row.
    train: (n_train, d), test: (n_test, d). Returns (similarities, indices), each
    (n_test, k), most similar first."""
    k = min(k, train.shape[0])
    bank = F.normalize(train.float(), dim=1)
    queries = F.normalize(test.float(), dim=1)
    chunk = max(1, CHUNK_ELEMENTS // max(1, bank.shape[0]))
    sims, index = [], []
    for start in range(0, queries.shape[0], chunk):
        top = (queries[start : start + chunk] @ bank.T).topk(k, dim=1)
        sims.append(top.values)
        index.append(top.indices)
    return torch.cat(sims), torch.cat(index)


def vote(
    similarities: Tensor, index: Tensor, train_labels: Tensor, classes: int, temperature: float
) -> Tensor:
    """Predicted class per test row: sum of exp(similarity / T) over the neighbours of each
    class, argmax (ties: lowest class). similarities, index: (n_test, k) -> (n_test,)."""
    weights = (similarities / temperature).exp()
    votes = torch.zeros(index.shape[0], classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, train_labels[index], weights)
    return votes.argmax(1)


def knn_accuracy(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    classes: int,
    k: int,
    temperature: float,
) -> float:
    """Test accuracy of the weighted kNN classifier (one tap, one target)."""
    sims, index = neighbours(x_train, x_test, k)
    predicted = vote(sims, index, y_train.to(index.device), classes, temperature)
    return (predicted == y_test.to(predicted.device)).double().mean().item()


def knn_probes(
    train: Mapping[str, Tensor],
    test: Mapping[str, Tensor],
    train_labels: Mapping[str, Tensor],
    test_labels: Mapping[str, Tensor],
    classes: Mapping[str, int],
    k: int,
    temperature: float,
) -> dict[tuple[str, str], float]:
    """(tap, target) -> kNN accuracy for every tap of `train` and every target of `classes`;
    the neighbours of a tap are computed once for all targets."""
    out = {}
    for tap, features in train.items():
        sims, index = neighbours(features, test[tap], k)
        for target, count in classes.items():
            labels = train_labels[target].to(index.device)
            predicted = vote(sims, index, labels, count, temperature)
            truth = test_labels[target].to(predicted.device)
            out[tap, target] = (predicted == truth).double().mean().item()
    return out


def knn_metrics(
    train: Mapping[str, Tensor],
    test: Mapping[str, Tensor],
    train_labels: Mapping[str, Tensor],
    test_labels: Mapping[str, Tensor],
    classes: Mapping[str, int],
    cfg: ProbeConfig,
) -> dict[str, float]:
    """`knn_probes` with probe.knn_k and probe.knn_temperature, as final metrics:
    knn/<target>/<tap> for every tap, and knn/<target>/gap = pre - post."""
    accuracy = knn_probes(
        train, test, train_labels, test_labels, classes, cfg.knn_k, cfg.knn_temperature
    )
    out = {M.knn(target, tap): value for (tap, target), value in accuracy.items()}
    for target in classes:
        if ("pre", target) in accuracy and ("post", target) in accuracy:
            out[M.knn(target, "gap")] = accuracy["pre", target] - accuracy["post", target]
    return out


__all__ = ["knn_accuracy", "knn_metrics", "knn_probes", "neighbours", "vote"]
