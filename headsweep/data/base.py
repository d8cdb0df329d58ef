"""The in-memory dataset every trial works on: whole splits as tensors on the trial's device.

Images stay uint8 until a view is made (4x less memory and bandwidth than float); the digit of
the MNIST-on-CIFAR experiments is a separate layer (`overlay`) composed per view (docs/science.md §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Split:
    """One split. `inputs`: uint8 (N, C, H, W) images, or float32 (N, K) latents for vector data.
    `labels`: target name -> int64 (N,). `overlay`: uint8 (N, 1, H, W) digit layer, or None."""

    inputs: Tensor
    labels: dict[str, Tensor]
    overlay: Tensor | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(
            self.inputs.to(device),
            {k: v.to(device) for k, v in self.labels.items()},
            None if self.overlay is None else self.overlay.to(device),
        )

    def take(self, index: Tensor) -> Split:
        index = index.to(self.inputs.device)
        # index_select: the same rows as advanced indexing, ~25x faster on the CPU
        return Split(
            self.inputs.index_select(0, index),
            {k: v.index_select(0, index) for k, v in self.labels.items()},
            None if self.overlay is None else self.overlay.index_select(0, index),
        )

    def head(self, n: int) -> Split:
        """The first n rows (n = 0 keeps everything)."""
        return self if n <= 0 or n >= len(self) else self.take(torch.arange(n))


@dataclass
class Dataset:
    name: str
    kind: Literal["image", "vector"]
    train: Split
    test: Split
    classes: dict[str, int] = field(default_factory=dict)  # target -> number of classes
    # Targets whose joint value is a sample's group (target label x spurious attribute, e.g.
    # ("y", "place") for Waterbirds); () = no groups. headsweep.groups scores worst-group accuracy.
    group_by: tuple[str, ...] = ()

    @property
    def targets(self) -> list[str]:
        return list(self.classes)

    @property
    def channels(self) -> int:
        return self.train.inputs.shape[1]

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(
            self.name,
            self.kind,
            self.train.to(device),
            self.test.to(device),
            self.classes,
            self.group_by,
        )


def place_digits(digits: Tensor, size: int, canvas: int = 32) -> Tensor:
    """uint8 (N, h, w) digit images -> uint8 (N, 1, canvas, canvas), resized to `size` px and
    centred ([X] §4.2: MNIST resized to 16 px in a 32x32 frame, or full frame)."""
    x = digits.float().unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = torch.zeros(digits.shape[0], 1, canvas, canvas)
    top = (canvas - size) // 2
    out[:, :, top : top + size, top : top + size] = x
    return out.round().clamp(0, 255).to(torch.uint8)


def pair_at_random(n: int, pool: int, generator: torch.Generator) -> Tensor:
    """Indices pairing n object images with digits from a pool, independent of both labels."""
    return torch.randint(pool, (n,), generator=generator)
