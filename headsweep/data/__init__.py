"""Datasets by name. Each builder takes a `DataConfig` and returns a CPU `Dataset`;
`load_dataset` moves it to the trial's device once."""

from __future__ import annotations

from collections.abc import Callable

import torch

from headsweep.config import DataConfig
from headsweep.data.base import Dataset, Split, pair_at_random, place_digits
from headsweep.data.digits_on_texture import digits_on_texture
from headsweep.data.spurious import spurious_textures
from headsweep.data.synthetic import synthetic
from headsweep.data.textures_v2 import TEXTURES_V2_STATS, textures_v2
from headsweep.data.torchvision_formats import cifar10, cifar100, mnist_on_cifar10
from headsweep.data.waterbirds import WATERBIRDS_STATS, waterbirds


def _textures_v2(cfg: DataConfig) -> Dataset:
    """textures_v2, or its spurious-correlation variant when data.spurious_rho is set."""
    return textures_v2(cfg) if cfg.spurious_rho is None else spurious_textures(cfg)


DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "digits_on_texture": digits_on_texture,
    "textures_v2": _textures_v2,
    "mnist_on_cifar10": mnist_on_cifar10,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "synthetic": synthetic,
    "waterbirds": waterbirds,
}

# The label targets each dataset provides, known without loading it (specs are checked early).
TARGETS: dict[str, tuple[str, ...]] = {
    "digits_on_texture": ("object", "coarse", "digit"),
    "textures_v2": ("object", "coarse", "digit"),
    "mnist_on_cifar10": ("object", "digit"),
    "cifar10": ("object",),
    "cifar100": ("fine", "coarse"),
    "waterbirds": ("y", "place"),
}


# Per-channel mean and std the views normalise with (solo-learn's values for CIFAR-10/100); the
# composed datasets sit on CIFAR-10-like images and use its statistics.
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "digits_on_texture": _CIFAR10_STATS,
    "textures_v2": TEXTURES_V2_STATS,
    "mnist_on_cifar10": _CIFAR10_STATS,
    "cifar10": _CIFAR10_STATS,
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "waterbirds": WATERBIRDS_STATS,
}


def targets_of(cfg: DataConfig) -> list[str]:
    if cfg.name == "synthetic":
        return [f"feature{k}" for k in range(len(cfg.phi))]
    return list(TARGETS[cfg.name])


def groups_of(cfg: DataConfig) -> tuple[str, ...]:
    """The targets whose joint value is a sample's group (Dataset.group_by), known without
    loading the data; () when the data has no groups."""
    if cfg.name == "waterbirds":
        return ("y", "place")
    if cfg.name == "textures_v2" and cfg.spurious_rho is not None:
        return ("digit", cfg.spurious_target)
    return ()


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu") -> Dataset:
    return DATASETS[cfg.name](cfg).to(device)


__all__ = [
    "DATASETS",
    "STATS",
    "TARGETS",
    "Dataset",
    "Split",
    "groups_of",
    "load_dataset",
    "pair_at_random",
    "place_digits",
    "targets_of",
]
