"""Representation diagnostics of a tap's features, label-free: how many directions the features
use and how they sit on the sphere, so pre and post can be compared beyond probe accuracy.

- `effective_rank` (RankMe, Garrido et al. 2023, "RankMe: Assessing the downstream performance
  of pretrained self-supervised representations by their rank"): exp of the Shannon entropy of
  the singular values of the (n, d) feature matrix, normalised to sum 1 with the paper's epsilon:
  p_k = sigma_k / ||sigma||_1 + eps. Between 1 and min(n, d).
- `alignment` (Wang & Isola 2020, "Understanding contrastive representation learning through
  alignment and uniformity on the hypersphere"): E ||f(x) - f(y)||_2^alpha over positive pairs
  (two augmented views of one image), alpha = 2, on L2-normalised features. 0 = views coincide.
- `uniformity` (same paper): log E exp(-t ||f(x) - f(y)||_2^2) over all pairs of distinct
  samples, t = 2, on L2-normalised features. More negative = more uniform on the sphere.

All are computed in float64 on the features' device. `diagnose` returns them per tap under the
metric names of `headsweep.metrics`: the trial measures them every epoch on the online subset
and, exactly, on the full test split at the end (headsweep.train).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headsweep import metrics as M

RANKME_EPS = 1e-7  # the epsilon of RankMe's p_k (the paper's value)
ALIGN_ALPHA = 2.0
UNIFORM_T = 2.0
# Rows of the pairwise block held at once: (chunk, n) float64, 64 MiB at n = 8,192.
PAIR_CHUNK = 1024


def singular_values(features: Tensor) -> Tensor:
    """Singular values of an (n, d) matrix, float64, from the eigenvalues of the smaller Gram
    matrix: an eigendecomposition of min(n, d)^2 entries instead of an SVD of the whole
    matrix (the width of an SAE tap is 8,192)."""
    x = features.double()
    gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()


def effective_rank(features: Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of (n, d) features: exp(-sum_k p_k log p_k), p_k = sigma_k / ||sigma||_1 + eps.
    1.0 when the features are all zero (no direction is used)."""
    sigma = singular_values(features)
    total = sigma.sum()
    if total <= 0:
        return 1.0
    p = sigma / total + eps
    return math.exp(-(p * p.log()).sum().item())


def alignment(view1: Tensor, view2: Tensor, alpha: float = ALIGN_ALPHA) -> float:
    """Mean ||f(x) - f(y)||^alpha over the rows of two (n, d) views of the same n samples,
    on L2-normalised features."""
    a, b = F.normalize(view1.double(), dim=1), F.normalize(view2.double(), dim=1)
    return (a - b).norm(dim=1).pow(alpha).mean().item()


def uniformity(features: Tensor, t: float = UNIFORM_T) -> float:
    """log of the mean of exp(-t ||f(x_i) - f(x_j)||^2) over all pairs i != j of the n rows,
    on L2-normalised features. Computed blockwise as a log-sum-exp (the full n x n block of
    a 10,000-image test split does not need to exist at once, and the sum cannot underflow)."""
    x = F.normalize(features.double(), dim=1)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 samples, got {n}")
    parts = []
    for start in range(0, n, PAIR_CHUNK):
        block = x[start : start + PAIR_CHUNK]
        # ||a - b||^2 = 2 - 2 <a, b> for unit vectors; clamp the rounding below 0.
        squared = (2 - 2 * block @ x.T).clamp_min(0)
        rows = torch.arange(block.shape[0], device=x.device)
        # exclude each row's pair with itself
        squared[rows, rows + start] = math.inf
        parts.append(torch.logsumexp(-t * squared.flatten(), dim=0))
    # each unordered pair appears twice, which the mean over n (n - 1) ordered pairs cancels
    return (torch.logsumexp(torch.stack(parts), dim=0) - math.log(n * (n - 1))).item()


def view_taps(
    encode: Callable[[Tensor], dict[str, Tensor]],
    views: Callable[[int, int], tuple[Tensor, Tensor]],
    n: int,
    batch_size: int,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Features of two augmented views of n examples: `views(start, stop)` draws both views of
    a batch, `encode` (a frozen model) returns its taps. Returns (view1, view2), each tap ->
    float32 (n, d). Both views go through one pass: in eval mode BatchNorm uses its running
    statistics, so a joint pass equals two separate ones."""
    first: dict[str, list[Tensor]] = {}
    second: dict[str, list[Tensor]] = {}
    for start in range(0, n, batch_size):
        v1, v2 = views(start, min(n, start + batch_size))
        for name, value in encode(torch.cat([v1, v2])).items():
            a, b = value.float().chunk(2)
            first.setdefault(name, []).append(a)
            second.setdefault(name, []).append(b)
    return (
        {name: torch.cat(parts) for name, parts in first.items()},
        {name: torch.cat(parts) for name, parts in second.items()},
    )


def diagnose(
    clean: Mapping[str, Tensor],
    view1: Mapping[str, Tensor],
    view2: Mapping[str, Tensor],
    online: bool = False,
) -> dict[str, float]:
    """Every diagnostic of every tap. clean: tap -> (n, d) features of un-augmented inputs
    (effective rank and uniformity: the representation the probes read); view1, view2: tap ->
    (m, d) features of two augmented views of the same m inputs (alignment). online: name them
    as the per-epoch estimates on the online subset."""
    out: dict[str, float] = {}
    for tap, features in clean.items():
        out[M.rank(tap, online)] = effective_rank(features)
        out[M.uniform(tap, online)] = uniformity(features)
        if tap in view1:
            out[M.align(tap, online)] = alignment(view1[tap], view2[tap])
    return out


__all__ = [
    "alignment",
    "diagnose",
    "effective_rank",
    "singular_values",
    "uniformity",
    "view_taps",
]


# Dead features (headsweep.health, docs/science.md §11): a channel with no variance over the
# training set, a filter under 1% of its layer's largest.
CHANNEL_FLOOR = 1e-6  # a channel's std under this share of the mean channel's std is dead
FILTER_FLOOR = 0.01


def dead_channel_share(features: Tensor) -> float:
    """The share of feature channels (columns of (n, d)) whose standard deviation over the
    rows is ~0 (under CHANNEL_FLOOR of the mean channel's)."""
    std = features.float().std(dim=0)
    scale = float(std.mean())
    if not math.isfinite(scale) or scale == 0:
        return 1.0
    return float((std < CHANNEL_FLOOR * scale).float().mean())


def dead_filter_share(encoder: nn.Module) -> float:
    """The largest share, over the encoder's convolution and linear layers, of output filters
    whose weight norm is under FILTER_FLOOR of that layer's largest filter norm."""
    worst = 0.0
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and module.weight.shape[0] > 1:
            norms = module.weight.detach().float().flatten(1).norm(dim=1)
            top = float(norms.max())
            share = 1.0 if top == 0 else float((norms < FILTER_FLOOR * top).float().mean())
            worst = max(worst, share)
    return worst
