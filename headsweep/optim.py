"""Optimisers and the learning-rate schedule: Adam, AdamW, SGD, LARS; linear warmup then cosine.

`OPTIMIZERS` maps `optim.name` to a builder; `build_optimizer` looks the name up there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from headsweep.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), with solo-learn's
    semantics (solo/utils/lars.py), the optimiser of [O] (docs/science.md §8). Per parameter p with
    gradient g, weight decay wd and the group's current lr:

        if (p.ndim != 1 or not exclude_bias_n_norm) and ||p|| != 0 and ||g|| != 0:
            lars_lr = eta ||p|| / (||g|| + wd ||p|| + eps)
            if clip_lr: lars_lr = min(lars_lr / lr, 1)
            d = lars_lr (g + wd p)
        else:
            d = g                      # excluded 1-D parameters: no scaling and no decay
        buf = d (first step), else buf = momentum buf + d
        p <- p - lr buf

    The branch is taken with `torch.where` on the norms, so a step never syncs with the host,
    and every parameter of a group is updated at once with `torch._foreach_*` ops (a loop over
    parameters was 7.2 of a 26 ms [O] step on an H200; BENCHMARKS.md, GPU check).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        eps: float = 1e-8,
        clip_lr: bool = True,
        exclude_bias_n_norm: bool = True,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS: need lr >= 0, momentum >= 0, weight_decay >= 0, eta > 0; got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "eps": eps,
            "clip_lr": clip_lr,
            "exclude_bias_n_norm": exclude_bias_n_norm,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._step_group(group, params)
        return loss

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        grads = [p.grad for p in params if p.grad is not None]  # all of them: step() checked
        updates: list[Tensor] = list(grads)  # excluded 1-D parameters: d = g
        trusted = [
            i for i, p in enumerate(params) if p.ndim != 1 or not group["exclude_bias_n_norm"]
        ]
        if trusted:
            ps, gs = [params[i] for i in trusted], [grads[i] for i in trusted]
            p_norm = torch.stack(torch._foreach_norm(ps))
            g_norm = torch.stack(torch._foreach_norm(gs))
            lars_lr = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
            if group["clip_lr"]:
                # lr = 0 gives inf, clipped to 1: the step is 0 either way.
                lars_lr = (lars_lr / lr).clamp(max=1.0)
            scaled = (p_norm != 0) & (g_norm != 0)
            scale = torch.where(scaled, lars_lr, torch.ones_like(lars_lr))
            decay = torch.where(scaled, wd, 0.0)
            d = torch._foreach_mul(ps, list(decay.unbind()))  # (g + decay p) * scale
            torch._foreach_add_(d, gs)
            torch._foreach_mul_(d, list(scale.unbind()))
            for i, update in zip(trusted, d, strict=True):
                updates[i] = update
        if momentum != 0:
            states = [self.state[p] for p in params]
            old = [i for i, st in enumerate(states) if "momentum_buffer" in st]
            for i, st in enumerate(states):
                if "momentum_buffer" not in st:  # the first step: buf = d
                    st["momentum_buffer"] = updates[i].detach().clone()
            if old:
                buffers = [states[i]["momentum_buffer"] for i in old]
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, [updates[i] for i in old])
            updates = [st["momentum_buffer"] for st in states]
        torch._foreach_add_(params, updates, alpha=-lr)


OptimizerBuilder = Callable[[OptimConfig, list[nn.Parameter], float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerBuilder] = {
    # L2 added to the gradient (coupled), as SAS's reference code does
    "adam": lambda c, params, lr: torch.optim.Adam(params, lr=lr, weight_decay=c.weight_decay),
    # decoupled decay: not rescaled away by Adam's per-coordinate steps
    "adamw": lambda c, params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=c.weight_decay),
    "sgd": lambda c, params, lr: torch.optim.SGD(
        params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay
    ),
    "lars": lambda c, params, lr: LARS(
        params,
        lr=lr,
        momentum=c.momentum,
        weight_decay=c.weight_decay,
        eta=c.lars_eta,
        clip_lr=c.lars_clip_lr,
        exclude_bias_n_norm=c.lars_exclude_bias_n_norm,
    ),
}


def build_optimizer(
    cfg: OptimConfig, params: list[nn.Parameter], batch_size: int
) -> torch.optim.Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise ValueError(
            f"optim.name: unknown optimizer {cfg.name!r} (allowed: {', '.join(OPTIMIZERS)})"
        )
    lr = cfg.lr * batch_size / 256 if cfg.scale_lr_by_batch else cfg.lr
    return OPTIMIZERS[cfg.name](cfg, params, lr)


def warmup_cosine(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
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


def gradient_norm(parameters: Iterable[nn.Parameter]) -> Tensor:
    """The total L2 norm of the parameters' gradients, on their device (no sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
