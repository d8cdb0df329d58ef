"""[O]'s reporting protocol (docs/science.md §8, solo-learn's `main_linear`): linear classifiers
trained on frozen encoder features of *augmented* training images, scored on clean test
features. No fine-tuning: the encoder runs in eval mode without gradients for the whole run
(its weights and BatchNorm statistics never change).

One classifier per (tap in `cfg.taps`) x target, all trained on the same minibatches: each
batch is augmented once (`augment`, one view per image: the caller wires the resized crop of
`cfg.crop_min_scale` and the flip of `cfg.horizontal_flip_prob` into it, as solo-learn's CIFAR
linear pipeline does with RandomResizedCrop(32, (0.08, 1)) + RandomHorizontalFlip) and encoded
once, and every head takes its tap of that forward pass. Optimiser: SGD or LARS from
`headsweep.optim` (LARS with `OptimConfig`'s solo-learn defaults: eta 0.02, clip_lr, 1-D
parameters excluded), per-step linear warmup then cosine or constant lr, minibatches of
`cfg.batch_size` drawn without replacement, the last partial batch dropped (solo-learn's
`drop_last=True`). The run is a function of `seed`: one generator draws the classifier
initialisation, the shuffles and the augmentations.

This is a different protocol from the frozen-feature probes of `headsweep.probes` (docs/science.md
§8): its results carry `protocol_name(cfg)`, starting with ``linear_eval(``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headsweep.config import LinearEvalConfig, OptimConfig
from headsweep.data.base import Split
from headsweep.optim import build_optimizer, build_scheduler
from headsweep.probes import ProbeResult, frozen

Encode = Callable[[Tensor], dict[str, Tensor]]
Augment = Callable[[Split, torch.Generator], Tensor]


def optim_config(cfg: LinearEvalConfig) -> OptimConfig:
    """The classifier's optimiser as an `OptimConfig` (LARS fields keep their defaults)."""
    return OptimConfig(
        name=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        schedule=cfg.schedule,
        warmup_epochs=cfg.warmup_epochs,
        scale_lr_by_batch=False,
    )


def protocol_name(cfg: LinearEvalConfig) -> str:
    """e.g. linear_eval(sgd,lr=0.1,momentum=0.9,wd=0,epochs=100,bs=256,schedule=cosine,
    crop=0.08,flip=0.5)."""
    o = optim_config(cfg)
    opt = o.name
    if opt == "lars":
        opt = (
            f"lars(eta={o.lars_eta:g},clip_lr={o.lars_clip_lr},"
            f"exclude_bias_n_norm={o.lars_exclude_bias_n_norm})"
        )
    return (
        f"linear_eval({opt},lr={cfg.lr:g},momentum={cfg.momentum:g},wd={cfg.weight_decay:g},"
        f"epochs={cfg.epochs},bs={cfg.batch_size},schedule={cfg.schedule},"
        f"warmup={cfg.warmup_epochs:g},"
        f"crop={cfg.crop_min_scale:g},flip={cfg.horizontal_flip_prob:g})"
    )


@dataclass
class LinearHead:
    """One classifier: logits = x W^T + b (nn.Linear's layout, so LARS sees a 2-D weight and
    a 1-D bias, as solo-learn's classifier)."""

    tap: str
    target: str
    weight: nn.Parameter  # (classes, d)
    bias: nn.Parameter  # (classes,)

    def logits(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        pred = self.logits(x.float().to(self.weight.device)).argmax(1)
        return (pred == y.to(pred.device)).double().mean().item()


def _init_head(
    tap: str, target: str, d: int, classes: int, g: torch.Generator, device: torch.device
) -> LinearHead:
    """nn.Linear's default initialisation, U(-1/sqrt(d), 1/sqrt(d)) for weight and bias, drawn
    from `g` (not the global generator)."""
    bound = 1 / math.sqrt(d)
    w = (torch.rand(classes, d, generator=g) * 2 - 1) * bound
    b = (torch.rand(classes, generator=g) * 2 - 1) * bound
    return LinearHead(tap, target, nn.Parameter(w.to(device)), nn.Parameter(b.to(device)))


def train_heads(
    encode: Encode,
    train: Split,
    dims: dict[str, int],
    augment: Augment,
    classes: dict[str, int],
    cfg: LinearEvalConfig,
    targets: list[str],
    seed: int,
    device: torch.device | str,
    model: nn.Module | None = None,
) -> list[LinearHead]:
    """Train one linear head per tap in cfg.taps x target (see the module docstring).
    dims: tap -> feature width. `model` is the module behind `encode` (defaults to `encode`
    itself when that is a module): it is held in eval mode without gradients (`frozen`) for the
    whole run and its previous mode restored afterwards. Without a module, the caller keeps the
    encoder in eval mode; `encode` is always called under no_grad and its outputs detached."""
    device = torch.device(device)
    if model is None and isinstance(encode, nn.Module):
        model = encode
    for tap in cfg.taps:
        if tap not in dims:
            raise ValueError(
                f"probe.linear_eval.taps: unknown tap {tap!r} (available: {', '.join(dims)})"
            )
    for target in targets:
        if target not in classes:
            raise ValueError(
                f"linear_eval: unknown target {target!r} (this dataset has: {', '.join(classes)})"
            )
    init = torch.Generator().manual_seed(seed)
    heads = [
        _init_head(tap, target, dims[tap], classes[target], init, device)
        for target in targets
        for tap in cfg.taps
    ]
    if cfg.epochs == 0 or not heads:
        return heads
    n = len(train)
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = n // batch_size  # drop_last
    o = optim_config(cfg)
    params = [p for h in heads for p in (h.weight, h.bias)]
    optimizer = build_optimizer(o, params, batch_size)
    scheduler = build_scheduler(o, optimizer, steps_per_epoch, cfg.epochs)
    g = torch.Generator(device).manual_seed(seed)
    taps = sorted({h.tap for h in heads})
    with frozen(model) if model is not None else nullcontext():
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=g, device=device)
            for step in range(steps_per_epoch):
                batch = train.take(order[step * batch_size : (step + 1) * batch_size])
                with torch.no_grad():
                    out = encode(augment(batch, g).to(device))
                feats = {t: out[t].detach().float() for t in taps}
                with torch.enable_grad():
                    loss = sum(
                        F.cross_entropy(h.logits(feats[h.tap]), batch.labels[h.target].to(device))
                        for h in heads
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[union-attr]
                optimizer.step()
                scheduler.step()
    for h in heads:
        h.weight.requires_grad_(False)
        h.bias.requires_grad_(False)
    return heads


def linear_eval(
    encode: Encode,
    train: Split,
    test_features: dict[str, Tensor],
    test_labels: dict[str, Tensor],
    augment: Augment,
    classes: dict[str, int],
    cfg: LinearEvalConfig,
    targets: list[str],
    seed: int,
    device: torch.device | str,
    model: nn.Module | None = None,
) -> list[ProbeResult]:
    """[O]'s linear evaluation: train heads on augmented training images (`train_heads`), score
    them on the clean test features (tap -> (n, d)). One ProbeResult per tap x target, each
    with `protocol_name(cfg)`; [] when cfg.epochs == 0 (off)."""
    if cfg.epochs == 0:
        return []
    dims = {tap: x.shape[1] for tap, x in test_features.items()}
    heads = train_heads(
        encode, train, dims, augment, classes, cfg, targets, seed, device, model=model
    )
    protocol = protocol_name(cfg)
    return [
        ProbeResult(
            h.tap,
            h.target,
            h.accuracy(test_features[h.tap], test_labels[h.target]),
            protocol,
            dims[h.tap],
            len(train),
            test_features[h.tap].shape[0],
        )
        for h in heads
    ]
