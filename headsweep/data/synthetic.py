"""Vector data of the theory experiments ([X] Xue et al., ICLR 2024, §3-4; docs/science.md §4.1).

K latent features z_k ~ N(0, 1) sit on the first K coordinates of x in R^dim with strengths phi_k;
the other coordinates carry only noise:

    x = sum_k phi_k s_k keep_k z_k e_k + noise * xi,    xi ~ N(0, I_dim), fresh per view.

The two views of a pair share z and differ in the augmentation (keep_k: feature k dropped in one
view with probability p_k; s_k = -1: feature k's sign flipped in one view) and in the noise xi.
A `Split` stores the latents z rather than x, because every view is built from z on the fly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from headsweep.config import DataConfig
from headsweep.data.base import Dataset, Split

FULL_TRAIN, FULL_TEST = 10_000, 2_000  # sizes when data.n_train / data.n_test is 0


def synthetic(cfg: DataConfig) -> Dataset:
    """Latents for the vector data of docs/science.md §4.1: `inputs` float32 (N, K) with K = len(phi),
    z ~ N(0, 1); targets `feature{k}` = int64 (z_k > 0), i.e. the sign of feature k, 2 classes.
    Turn latents into inputs with `embed` (clean) or `feature_views` (two augmented views)."""
    k = len(cfg.phi)
    if k < 1:
        raise ValueError("data.phi: needs at least one feature strength")
    if cfg.dim < k:
        raise ValueError(f"data.dim: must be >= len(data.phi) = {k}, got {cfg.dim}")
    generator = torch.Generator().manual_seed(cfg.seed)
    n_train = cfg.n_train or FULL_TRAIN
    n_test = cfg.n_test or FULL_TEST

    def split(n: int) -> Split:
        z = torch.randn(n, k, generator=generator)
        return Split(z, {f"feature{j}": (z[:, j] > 0).long() for j in range(k)})

    train = split(n_train)
    test = split(n_test)
    return Dataset("synthetic", "vector", train, test, {f"feature{j}": 2 for j in range(k)})


def embed(
    z: Tensor,
    phi: Sequence[float] | Tensor,
    dim: int,
    noise: float,
    generator: torch.Generator | None,
    keep: Tensor | None = None,
    flip: Tensor | None = None,
) -> Tensor:
    """Latents -> inputs: x = sum_k phi_k s_k z_k e_k + noise * xi (docs/science.md §4.1).

    z: (N, K) latents; phi: K strengths; keep: (N, K) bool, False zeroes feature k of that row;
    flip: (N, K) bool, True flips its sign (s_k = -1). xi ~ N(0, I_dim) is drawn from `generator`,
    which must live on z's device. Returns (N, dim) in z's dtype; features occupy the first K
    coordinates, the remaining dim - K carry noise only."""
    n, k = z.shape
    if dim < k:
        raise ValueError(f"dim: must be >= the number of features {k}, got {dim}")
    strength = torch.as_tensor(phi, dtype=z.dtype, device=z.device)
    if strength.shape != (k,):
        raise ValueError(
            f"phi: expected {k} strengths for z of shape {tuple(z.shape)}, "
            f"got {tuple(strength.shape)}"
        )
    features = z * strength
    if keep is not None:
        features = features * keep.to(z.dtype)
    if flip is not None:
        features = torch.where(flip, -features, features)
    x = noise * torch.randn(n, dim, generator=generator, dtype=z.dtype, device=z.device)
    x[:, :k] += features
    return x


def feature_views(
    z: Tensor,
    phi: Sequence[float] | Tensor,
    dim: int,
    noise: float,
    feature_drop: Sequence[float],
    sign_flip: Sequence[int],
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Two augmented views (x1, x2), each (N, dim), of the latents z: (N, K) ([X] §3-4).

    feature_drop: K probabilities p_k (or empty for no dropping). With probability p_k a pair
    loses feature k in exactly one of its two views, chosen at random, so each single view keeps
    feature k with probability 1 - p_k / 2 and both views share it with probability 1 - p_k.
    sign_flip: feature indices whose sign is flipped in one randomly chosen view of every pair
    (the non-linear experiment of [X] §4: the loss then asks for invariance to sign(z_j)).
    Noise is independent per view. All draws are batched and come from `generator` in a fixed
    order, so the views are a deterministic function of (z, generator state)."""
    n, k = z.shape
    device = z.device
    keep1 = keep2 = flip1 = flip2 = None
    if len(feature_drop):
        p = torch.as_tensor(feature_drop, dtype=torch.float32, device=device)
        if p.shape != (k,):
            raise ValueError(f"feature_drop: expected {k} probabilities, got {len(feature_drop)}")
        dropped = torch.rand(n, k, generator=generator, device=device) < p
        in_view1 = torch.rand(n, k, generator=generator, device=device) < 0.5
        keep1 = ~(dropped & in_view1)
        keep2 = ~(dropped & ~in_view1)
    if len(sign_flip):
        index = torch.as_tensor(list(sign_flip), dtype=torch.long, device=device)
        if index.min() < 0 or index.max() >= k:
            raise ValueError(f"sign_flip: feature indices must be in [0, {k}), got {sign_flip}")
        in_view1 = torch.rand(n, index.numel(), generator=generator, device=device) < 0.5
        flip1 = torch.zeros(n, k, dtype=torch.bool, device=device)
        flip2 = torch.zeros(n, k, dtype=torch.bool, device=device)
        flip1[:, index] = in_view1
        flip2[:, index] = ~in_view1
    x1 = embed(z, phi, dim, noise, generator, keep1, flip1)
    x2 = embed(z, phi, dim, noise, generator, keep2, flip2)
    return x1, x2
