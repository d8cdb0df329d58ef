"""Offline stand-in for MNIST-on-CIFAR-10 ([X] Fig. 3; docs/science.md §4.2).

Objects are procedurally generated 32x32 colour textures in 10 classes: oriented sinusoidal
gratings whose class fixes the orientation (5 values) and the frequency (2 values), each class with
its own palette, every sample jittered in angle, frequency, phase and colour, plus pixel noise.
Colour jitter and grayscale leave orientation and frequency intact, so a small CNN trained with
SimCLR views can still learn the object. Targets: `object` (10 classes), `coarse` (the orientation,
5 classes: a coarse grouping of the objects for the coarse -> fine experiment of §4.3), and
`digit` (10 classes, scikit-learn's 8x8 handwritten digits, shipped with the package so nothing
is downloaded). The digit layer is stored apart and composed per view.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from headsweep.config import DataConfig
from headsweep.data.base import Dataset, Split, pair_at_random, place_digits

FULL_TRAIN, FULL_TEST = 50_000, 10_000  # CIFAR-sized when data.n_train / n_test is 0

# One (colour A, colour B) pair per object class, RGB in [0, 1].
_PALETTE = torch.tensor(
    [
        [[0.85, 0.30, 0.25], [0.20, 0.25, 0.45]],
        [[0.90, 0.75, 0.30], [0.35, 0.20, 0.15]],
        [[0.35, 0.70, 0.35], [0.60, 0.55, 0.80]],
        [[0.30, 0.55, 0.85], [0.85, 0.80, 0.60]],
        [[0.75, 0.40, 0.75], [0.25, 0.45, 0.30]],
        [[0.55, 0.80, 0.85], [0.45, 0.25, 0.35]],
        [[0.90, 0.55, 0.45], [0.30, 0.40, 0.55]],
        [[0.50, 0.45, 0.30], [0.80, 0.85, 0.75]],
        [[0.70, 0.70, 0.70], [0.25, 0.30, 0.25]],
        [[0.95, 0.85, 0.60], [0.55, 0.30, 0.50]],
    ]
)


def textures(labels: Tensor, generator: torch.Generator, size: int = 32) -> Tensor:
    """int64 (N,) object classes -> uint8 (N, 3, size, size) textures."""
    n = labels.shape[0]
    angle = (labels % 5).float() * (math.pi / 5) + 0.08 * torch.randn(n, generator=generator)
    cycles = torch.where(labels < 5, 2.5, 5.0) * (1 + 0.08 * torch.randn(n, generator=generator))
    phase = 2 * math.pi * torch.rand(n, generator=generator)
    coords = torch.arange(size, dtype=torch.float32) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    along = x[None] * angle.cos()[:, None, None] + y[None] * angle.sin()[:, None, None]
    wave = 0.5 + 0.5 * torch.sin(2 * math.pi * cycles[:, None, None] * along + phase[:, None, None])
    colours = _PALETTE[labels] + 0.08 * torch.randn(n, 2, 3, generator=generator)
    image = colours[:, 0, :, None, None] * wave[:, None] + colours[:, 1, :, None, None] * (
        1 - wave[:, None]
    )
    image = image + 0.06 * torch.randn(image.shape, generator=generator)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def handwritten_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 handwritten digits: uint8 (N, 8, 8) in [0, 255] and int64 labels."""
    from sklearn.datasets import load_digits  # local: only this dataset needs scikit-learn

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float() * (255.0 / 16.0)
    return images.round().to(torch.uint8), torch.from_numpy(bunch.target).long()


def _split(
    n: int, digit_pool: Tensor, digit_labels: Tensor, size: int, generator: torch.Generator
) -> Split:
    objects = torch.randint(10, (n,), generator=generator)
    images = torch.cat([textures(chunk, generator) for chunk in objects.split(8192)])
    pairing = pair_at_random(n, digit_pool.shape[0], generator)
    overlay = place_digits(digit_pool, size)[pairing]
    labels = {"object": objects, "coarse": objects % 5, "digit": digit_labels[pairing]}
    return Split(images, labels, overlay)


def digit_pools(g: torch.Generator) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """scikit-learn's digits split 80/20 at random into disjoint (images, labels) pools for the
    train and test splits, so the digit probe measures generalisation."""
    digits, digit_labels = handwritten_digits()
    order = torch.randperm(digits.shape[0], generator=g)
    cut = int(0.8 * digits.shape[0])
    train_pool, test_pool = order[:cut], order[cut:]
    return (
        (digits[train_pool], digit_labels[train_pool]),
        (digits[test_pool], digit_labels[test_pool]),
    )


def digits_on_texture(cfg: DataConfig) -> Dataset:
    generator = torch.Generator().manual_seed(cfg.seed)
    train_digits, test_digits = digit_pools(generator)
    train = _split(cfg.n_train or FULL_TRAIN, *train_digits, cfg.digit_size, generator)
    test = _split(cfg.n_test or FULL_TEST, *test_digits, cfg.digit_size, generator)
    return Dataset(
        "digits_on_texture", "image", train, test, {"object": 10, "coarse": 5, "digit": 10}
    )
