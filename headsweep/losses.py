"""Pretraining losses (docs/science.md §2), always computed in fp32 even under mixed precision."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from headsweep.config import LossConfig
from headsweep.normalize import unit_rows


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent / InfoNCE of SimCLR (Chen et al. 2020). z1, z2: (N, D) views of the same N
    samples. The 2N rows are L2-normalised (an all-zero row kept at 0: headsweep.normalize),
    logits = cos / temperature with the diagonal masked, the positive of each row is its other
    view. Returns the mean over the 2N anchors."""
    z = unit_rows(torch.cat([z1, z2]).float())
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)
    return F.cross_entropy(logits, positives)


def spectral_contrastive(z1: Tensor, z2: Tensor) -> Tensor:
    """Spectral contrastive loss (HaoChen et al. 2021), the loss of [X]'s theory:
    L = -2 E[f(x)^T f(x+)] + E[(f(x)^T f(x'))^2], x' independent: the other rows of the batch.
    z1, z2: (N, D), not normalised."""
    z1, z2 = z1.float(), z2.float()
    n = z1.shape[0]
    cross = z1 @ z2.T
    positive = cross.diagonal().mean()
    off_diagonal = cross.pow(2).sum() - cross.diagonal().pow(2).sum()
    return -2 * positive + off_diagonal / (n * (n - 1))


def supcon(z: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """Supervised contrastive loss, the L_out form (Khosla et al. 2020). z: (M, D) rows (both
    views stacked), labels: (M,). For anchor i the positives are the other rows with its label:
    L_i = -(1/|P(i)|) sum_p s_ip + log sum_{a != i} exp(s_ia). Anchors with no positive in the
    batch are skipped (they would give 0/0); a batch with none at all gives 0, never NaN."""
    z = unit_rows(z.float())
    m = z.shape[0]
    logits = z @ z.T / temperature
    self_mask = torch.eye(m, dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    log_norm = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)
    count = positive.sum(1)
    valid = count > 0
    mean_positive = (logits * positive).sum(1) / count.clamp_min(1)
    per_anchor = log_norm - mean_positive
    return (per_anchor * valid).sum() / valid.sum().clamp_min(1)


def barlow_twins(
    z1: Tensor, z2: Tensor, lambda_offdiag: float = 0.0051, scale: float = 0.1
) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021): BatchNorm1d(affine=False) on each view,
    C = z1^T z2 / N, L = scale * [sum_i (1 - C_ii)^2 + lambda_offdiag sum_{i != j} C_ij^2]
    (scale 0.1 in [O]'s configs). z1, z2: (N, D)."""
    n = z1.shape[0]
    c = (
        F.batch_norm(z1.float(), None, None, training=True).T
        @ F.batch_norm(z2.float(), None, None, training=True)
        / n
    )
    diagonal = c.diagonal()
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return scale * (on + lambda_offdiag * off)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Supervised learning with a head between encoder and classifier ([X] §SL)."""
    return F.cross_entropy(logits.float(), labels)


# An objective maps both views' outputs (post taps, or classifier logits for cross_entropy)
# and the batch labels of loss.target to a scalar.
Objective = Callable[[Tensor, Tensor, Tensor | None, LossConfig], Tensor]


def _both_views(labels: Tensor | None) -> Tensor:
    """The labels of both stacked views (2N,); supervised losses need them."""
    if labels is None:
        raise ValueError("loss.target: a supervised loss needs a label target")
    return torch.cat([labels, labels])


LOSSES: dict[str, Objective] = {
    "nt_xent": lambda z1, z2, y, c: nt_xent(z1, z2, c.temperature),
    "spectral": lambda z1, z2, y, c: spectral_contrastive(z1, z2),
    "supcon": lambda z1, z2, y, c: supcon(torch.cat([z1, z2]), _both_views(y), c.temperature),
    "barlow": lambda z1, z2, y, c: barlow_twins(z1, z2, c.lambda_offdiag, c.scale),
    "cross_entropy": lambda z1, z2, y, c: cross_entropy(torch.cat([z1, z2]), _both_views(y)),
}
SUPERVISED = frozenset({"supcon", "cross_entropy"})
