"""Optimisers and the learning-rate schedule: Adam, AdamW, SGD, LARS; linear warmup then cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from headsweep.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as used by solo-learn
    and so by [O]. Biases and normalisation parameters (ndim <= 1) get neither weight decay nor
    the trust ratio, the usual exclusion."""

    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02
    ) -> None:
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta}
        )

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.linalg.norm(p), torch.linalg.norm(grad)
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0),
                        group["eta"] * p_norm / g_norm,
                        torch.ones_like(p_norm),
                    )
                    grad = grad * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(
    cfg: OptimConfig, params: list[nn.Parameter], batch_size: int
) -> torch.optim.Optimizer:
    lr = cfg.lr * batch_size / 256 if cfg.scale_lr_by_batch else cfg.lr
    if cfg.name == "adam":  # L2 added to the gradient (coupled), as SAS's reference code does
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":  # decoupled decay: not rescaled away by Adam's per-coordinate steps
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return LARS(
        params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta
    )


def warmup_cosine(cfg: OptimConfig, steps_per_epoch: int, epochs: int):
    """Per-step multiplier: linear warmup over `warmup_epochs`, then cosine to 0 (or constant)."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = max(1, epochs * steps_per_epoch)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg, steps_per_epoch, epochs))
