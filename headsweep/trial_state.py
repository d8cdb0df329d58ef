"""The pieces of one trial that outlive its loop (headsweep.train): the model (encoder + head,
forward to taps), the state a checkpoint holds and a resume restores exactly, the result it
returns, and the device and precision it runs at."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from headsweep.atomic import write_with
from headsweep.backbones import build_backbone
from headsweep.config import TrialConfig
from headsweep.heads import build_head


class Model(nn.Module):
    """Encoder + head (+ a classifier on the head output for the cross-entropy setup).
    forward(x) -> taps: pre (encoder features), internal layers, post."""

    def __init__(self, cfg: TrialConfig, in_channels: int, classes: int) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg.model, in_channels)
        self.head = build_head(self.backbone.dim, cfg.model.head)
        self.classifier = (
            nn.Linear(self.head.out_dim, classes) if cfg.loss.name == "cross_entropy" else None
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.head(self.backbone(x))


@dataclass
class TrialResult:
    config: dict[str, Any]
    metrics: dict[str, float]  # final flat metrics: probes, last-epoch training metrics
    probes: list[dict[str, Any]]  # one row per tap x target
    history: list[dict[str, float]]  # one row per epoch
    timings: dict[str, float]
    device: str
    few_shot: list[dict[str, Any]] = field(default_factory=list)  # tap x target x shots x subset
    groups: list[dict[str, Any]] = field(default_factory=list)  # tap x target x method

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainState:
    """Everything a resumed run needs to continue exactly where it stopped."""

    model: Model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self.history = [dict(row) for row in state["history"]]

    def save(self, path: str | os.PathLike) -> None:
        """Atomic write (headsweep.atomic): a temp file in the same directory, then rename."""
        write_with(path, lambda tmp: torch.save(self.state_dict(), tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    # weights_only: a checkpoint is data, never code.
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} requested but CUDA is not available")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str) -> AbstractContextManager:
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
