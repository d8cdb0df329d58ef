"""Matrix-based mutual-information bottleneck between encoder and head features
([O] Ouyang et al., ICLR 2025, §4; docs/science.md §3).

With Ẑ row-normalised, K = Ẑ Ẑ^T has a unit diagonal and K / n is a density matrix; the matrix
Rényi entropy is H_α(K) = 1/(1-α) log tr((K/n)^α), and
I_α(Z1; Z2) = H_α(K1) + H_α(K2) - H_α(K1 ∘ K2). For α = 2 every trace is a Frobenius norm:
I_2 = log(n² ‖K1 ∘ K2‖²_F / (‖K1‖²_F ‖K2‖²_F)), cheap and stable. Computed in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from headsweep.normalize import unit_rows


def gram(x: Tensor) -> Tensor:
    """(n, d) -> (n, n) Gram matrix of the L2-normalised rows (unit diagonal).

    An all-zero row (e.g. FSQ with 2 levels rounds every coordinate to 0) has no direction: it
    counts as one shared code, identical to the other zero rows and orthogonal to the rest, so
    the diagonal stays 1 and a constant head gives I₂ = 0 instead of 0/0."""
    x = x.float()
    zero = (x.abs().amax(dim=1, keepdim=True) == 0).float()
    x = torch.cat([unit_rows(x), zero], dim=1)
    return x @ x.T


def renyi_entropy(k: Tensor, alpha: float = 2) -> Tensor:
    """H_α(K) = 1/(1-α) log tr((K/n)^α) for a PSD (n, n) K with unit diagonal. α = 2 uses the
    Frobenius form; other α use the eigenvalues."""
    n = k.shape[0]
    if alpha == 2:
        return -torch.log(k.pow(2).sum() / n**2)
    eig = torch.linalg.eigvalsh(k / n).clamp_min(0)
    return torch.log(eig.pow(alpha).sum()) / (1 - alpha)


def matrix_mutual_information(a: Tensor, b: Tensor, alpha: float = 2) -> Tensor:
    """I_α between encoder features a (n, d1) and head features b (n, d2), both views already
    stacked (n = 2N rows); rows are L2-normalised here. Gradients reach both inputs."""
    k1, k2 = gram(a), gram(b)
    if alpha == 2:
        n = a.shape[0]
        joint = (k1 * k2).pow(2).sum()
        return torch.log(n**2 * joint / (k1.pow(2).sum() * k2.pow(2).sum()))
    return renyi_entropy(k1, alpha) + renyi_entropy(k2, alpha) - renyi_entropy(k1 * k2, alpha)


@torch.no_grad()
def bottleneck_metrics(
    h1: Tensor, h2: Tensor, z1: Tensor, z2: Tensor, encoder_loss: Tensor
) -> dict[str, Tensor]:
    """[O]'s logged quantities for one batch: I₂ between encoder and head features, the proxy
    lower bound -L(h1, h2) - I₂ and upper bound H₂(K1) - I₂, where L is the method's own loss
    evaluated on the encoder features (InfoNCE for SimCLR, the Barlow loss for Barlow Twins;
    docs/science.md §8), passed in as `encoder_loss`. h*: encoder, z*: head, (N, d).
    Scalar tensors, left on the device so a training loop syncs once per epoch."""
    h, z = torch.cat([h1, h2]), torch.cat([z1, z2])
    i2 = matrix_mutual_information(h, z)
    return {
        "mi": i2,
        "mi_lower": -encoder_loss.float() - i2,
        "mi_upper": renyi_entropy(gram(h)) - i2,
    }
