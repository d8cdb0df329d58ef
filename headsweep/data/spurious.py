"""`textures_v2` with a spurious correlation between the digit and the texture: the offline
stand-in for [X]'s spurious-correlation experiments (Waterbirds, UrbanCars; worst-group accuracy),
on the CPU instrument. On when `data.spurious_rho` is set (`data.name: textures_v2`).

The rule. Let t = `data.spurious_target` (`coarse`, 5 classes, or `object`, 20 classes) and
n_t its number of classes. Digit class c is paired with class c mod n_t of t (coarse: digits 0
and 5 with gratings, 1 and 6 with rings, ...; object: digit c with object c).

- Train split (what the encoder is pretrained on *and* what the probes are fitted on, as in [X]:
  the encoder only ever sees the biased data): digits exactly balanced over the 10 classes;
  exactly round(rho * n) images, chosen at random, carry their digit's paired class of t, every
  other image one of the n_t - 1 other classes uniformly at random. So the agreement fraction is
  round(rho * n) / n exactly; rho = 1 / n_t is independence in expectation, rho = 0 never agrees.
- Test split: the groups (digit, class of t) are exactly balanced (counts differ by at most one),
  so the digit and t are independent there and worst-group accuracy is measured on every group.

Groups = (digit, class of t): 50 for `coarse`, 200 for `object`; worst-group accuracy is a minimum
over groups of n_test / groups images each, so give the test split enough images (the
`xue_spurious` spec's cpu profile uses 2,500: 50 per group). When t is `coarse`, the fine
frequency level of each object is drawn uniformly. Everything else (textures, palettes, contrast,
digit placement, disjoint train/test digit images) is exactly `textures_v2`'s, and the dataset is
a deterministic function of data.seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from headsweep.config import DataConfig
from headsweep.data.base import Dataset, Split, place_digits
from headsweep.data.digits_on_texture import FULL_TEST, FULL_TRAIN, digit_pools
from headsweep.data.textures_v2 import COARSE, LEVELS, OBJECTS, balanced_labels, textures

DIGITS = 10
SPURIOUS_CLASSES = {"coarse": len(COARSE), "object": OBJECTS}


def paired_class(digits: Tensor, n_spurious: int) -> Tensor:
    """The class of the spurious target each digit is paired with: digit mod n_spurious."""
    return digits % n_spurious


def biased_labels(n: int, rho: float, n_spurious: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(digit, spurious class), each int64 (n,): digits balanced, exactly round(rho * n) rows
    (at random) carry the paired class, the others one of the other classes uniformly."""
    digits = balanced_labels(n, DIGITS, g)
    agree = torch.zeros(n, dtype=torch.bool)
    agree[torch.randperm(n, generator=g)[: round(rho * n)]] = True
    # An offset in [1, n_spurious) from the paired class is uniform over the other classes.
    offset = 1 + torch.randint(max(n_spurious - 1, 1), (n,), generator=g)
    spurious = torch.where(agree, 0, offset) + paired_class(digits, n_spurious)
    return digits, spurious % n_spurious


def balanced_group_labels(n: int, n_spurious: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(digit, spurious class) with every group (digit x class) n // groups or one more times."""
    group = balanced_labels(n, DIGITS * n_spurious, g)
    return group // n_spurious, group % n_spurious


def _digit_images(digits: Tensor, pool_labels: Tensor, g: torch.Generator) -> Tensor:
    """For each row, a random index into the digit pool among the images of its class."""
    index = torch.empty_like(digits)
    for c in range(DIGITS):
        rows = (digits == c).nonzero().squeeze(1)
        members = (pool_labels == c).nonzero().squeeze(1)
        index[rows] = members[torch.randint(members.shape[0], (rows.shape[0],), generator=g)]
    return index


def _split(
    digits: Tensor,
    spurious: Tensor,
    target: str,
    pool: tuple[Tensor, Tensor],
    cfg: DataConfig,
    g: torch.Generator,
) -> Split:
    if target == "coarse":
        objects = spurious * len(LEVELS) + torch.randint(len(LEVELS), spurious.shape, generator=g)
    else:
        objects = spurious
    contrast = (float(cfg.texture_contrast[0]), float(cfg.texture_contrast[1]))
    images = torch.cat([textures(chunk, g, 32, contrast) for chunk in objects.split(1024)])
    digit_pool, pool_labels = pool
    pairing = _digit_images(digits, pool_labels, g)
    overlay = place_digits(digit_pool, cfg.digit_size)[pairing]
    labels = {"object": objects, "coarse": objects // len(LEVELS), "digit": pool_labels[pairing]}
    return Split(images, labels, overlay)


def spurious_textures(cfg: DataConfig) -> Dataset:
    """textures_v2 whose train split correlates the digit with `data.spurious_target` at
    `data.spurious_rho`; targets and classes as textures_v2, group_by = (digit, target)."""
    if cfg.spurious_rho is None:
        raise ValueError("data.spurious_rho: must be set (in [0, 1]) for the spurious variant")
    target = cfg.spurious_target
    n_spurious = SPURIOUS_CLASSES[target]
    g = torch.Generator().manual_seed(cfg.seed)
    train_pool, test_pool = digit_pools(g)
    train = _split(
        *biased_labels(cfg.n_train or FULL_TRAIN, cfg.spurious_rho, n_spurious, g),
        target,
        train_pool,
        cfg,
        g,
    )
    test = _split(
        *balanced_group_labels(cfg.n_test or FULL_TEST, n_spurious, g), target, test_pool, cfg, g
    )
    classes = {"object": OBJECTS, "coarse": len(COARSE), "digit": DIGITS}
    return Dataset("textures_v2", "image", train, test, classes, ("digit", target))
