"""Projection heads g (docs/science.md §1), each selectable by name.

Every head maps encoder features h (B, d) to an ordered dict of *taps*: ``pre`` (h itself), one
entry per internal layer, and ``post`` (z = g(h)). Probes read any tap without hooks, so the
pre/post comparison and every intermediate layer come from the same forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from headsweep.config import HeadConfig

Taps = dict[str, Tensor]


class Head(nn.Module):
    """A chain of named stages; each stage's output is a tap, the last one is ``post``."""

    def __init__(self, stages: list[tuple[str, nn.Module]], out_dim: int) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(dict(stages))
        self.out_dim = out_dim

    def forward(self, h: Tensor) -> Taps:
        taps = {"pre": h}
        z = h
        for name, stage in self.stages.items():
            z = stage(z)
            taps[name] = z
        if "post" not in taps:  # the identity head
            taps["post"] = h
        return taps


def mlp_stages(d_in: int, cfg: HeadConfig, last: str = "post") -> list[tuple[str, nn.Module]]:
    """Linear(d, H) -> [BN] -> ReLU -> ... -> Linear(H, out) [-> BN(affine=False)], `depth`
    Linear layers in all. Hidden stages are taps ``layer1``, ``layer2``, ...; the last is `last`."""
    stages: list[tuple[str, nn.Module]] = []
    width = d_in
    for i in range(1, cfg.depth):
        block: list[nn.Module] = [nn.Linear(width, cfg.hidden, bias=cfg.bias)]
        if cfg.batch_norm:
            block.append(nn.BatchNorm1d(cfg.hidden))
        block.append(nn.ReLU(inplace=True))
        stages.append((f"layer{i}", nn.Sequential(*block)))
        width = cfg.hidden
    final: list[nn.Module] = [nn.Linear(width, cfg.out, bias=cfg.bias)]
    if cfg.last_bn:
        final.append(nn.BatchNorm1d(cfg.out, affine=False))
    stages.append((last, nn.Sequential(*final)))
    return stages


def none_head(d: int, cfg: HeadConfig) -> Head:
    """z = h: the control, pre = post."""
    return Head([], d)


def linear_head(d: int, cfg: HeadConfig) -> Head:
    """z = W h (+ b): the theory model of [X] (Xue et al., ICLR 2024, §3)."""
    return Head([("post", nn.Linear(d, cfg.out, bias=cfg.bias))], cfg.out)


def mlp_head(d: int, cfg: HeadConfig) -> Head:
    """The usual MLP projector (SimCLR, SAS critic, Barlow Twins presets in config.HEAD_PRESETS)."""
    return Head(mlp_stages(d, cfg), cfg.out)


def reweight_vector(d: int, kappa: float) -> Tensor:
    """r_i = kappa^-i, i = 0..d-1, computed in float64 and clamped at the smallest normal
    float32: for kappa >= 1.2 and d = 512 the tail would underflow to zero in fp32."""
    r = torch.pow(torch.tensor(kappa, dtype=torch.float64), -torch.arange(d, dtype=torch.float64))
    return r.clamp_min(torch.finfo(torch.float32).tiny).float()


class Reweight(nn.Module):
    """z = h ⊙ r with a frozen r: saved in the state dict (a buffer), never trained."""

    weights: Tensor

    def __init__(self, d: int, kappa: float) -> None:
        super().__init__()
        self.register_buffer("weights", reweight_vector(d, kappa))

    def forward(self, h: Tensor) -> Tensor:
        return h * self.weights


def fixed_reweight_head(d: int, cfg: HeadConfig) -> Head:
    """[X]'s interpretable alternative to a projection head (§6): a fixed geometric
    reweighting of the feature axes; kappa = 1 is the identity. Keeps the dimension."""
    return Head([("post", Reweight(d, cfg.kappa))], d)


def fsq_quantize(z: Tensor, levels: int) -> Tensor:
    """Finite scalar quantisation of each dimension to `levels` values, straight-through.

    Follows [O]'s code (Ouyang et al., ICLR 2025; after Mentzer et al. 2023): bound with tanh
    into (-half - off, half - off), round with a straight-through gradient (tanh's derivative
    kept), and rescale by levels // 2. z: (B, D) -> (B, D) with at most `levels` distinct values
    per dimension."""
    half = (levels - 1) * (1 - 1e-3) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    shift = torch.tan(torch.tensor(offset / half)).item()
    bounded = torch.tanh(z.float() + shift) * half - offset
    quantized = bounded + (torch.round(bounded) - bounded).detach()
    return (quantized / (levels // 2)).to(z.dtype)


class FSQ(nn.Module):
    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, z: Tensor) -> Tensor:
        return fsq_quantize(z, self.levels)


def discrete_head(d: int, cfg: HeadConfig) -> Head:
    """[O]'s structural bottleneck: an MLP followed by FSQ with `levels` levels per dimension.
    Taps: pre, layer*, ``mlp`` (continuous output), post (quantised)."""
    return Head([*mlp_stages(d, cfg, last="mlp"), ("post", FSQ(cfg.levels))], cfg.out)


def sae_size(width: int, cfg: HeadConfig) -> tuple[int, int]:
    """(k, latents) of a top-k SAE on `width`-dimensional inputs."""
    k, latents = round(cfg.k_per_dim * width), round(cfg.latents_per_dim * width)
    if k < 1:
        raise ValueError(
            f"model.head.k_per_dim: {cfg.k_per_dim:g} x input width {width} gives k = {k}; "
            f"need k >= 1 (k_per_dim >= {1 / width:.3g})"
        )
    return k, max(latents, k)


class TopKSAEHead(Head):
    """[O]'s top-k sparse autoencoder head, used without reconstruction or L1 loss:
    u = z - b_pre; a = ReLU(W_enc u + b_enc), keep the top k of a per sample (the kept entries
    carry the gradient); out = W_dec a + b_dec + b_pre. Acts on h directly (SimCLR) or after a
    Linear-BN-ReLU prelude (Barlow). Taps: pre, [prelude], ``latents`` (the sparse code), post.
    Sized relative to the SAE's input width w (d, or the prelude's width): k = k_per_dim * w,
    latents = latents_per_dim * w. [O]'s SimCLR config has k = 1000 and 100k latents on
    w = 512; k/w is the axis that keeps the bottleneck comparable across widths (§8)."""

    def __init__(self, d: int, cfg: HeadConfig) -> None:
        stages: list[tuple[str, nn.Module]] = []
        width = d
        if cfg.sae_prelude:
            stages.append(
                (
                    "prelude",
                    nn.Sequential(
                        nn.Linear(d, cfg.hidden), nn.BatchNorm1d(cfg.hidden), nn.ReLU(inplace=True)
                    ),
                )
            )
            width = cfg.hidden
        super().__init__(stages, width)
        self.k, self.latents = sae_size(width, cfg)
        self.pre_bias = nn.Parameter(torch.zeros(width))
        self.encoder = nn.Linear(width, self.latents)
        self.decoder = nn.Linear(self.latents, width)

    def forward(self, h: Tensor) -> Taps:
        taps = super().forward(h)
        del taps["post"]  # the base class fills it with h; the SAE's output replaces it
        z = taps.get("prelude", h)
        acts = torch.relu(self.encoder(z - self.pre_bias))
        top = acts.topk(self.k, dim=1)
        sparse = torch.zeros_like(acts).scatter(1, top.indices, top.values)
        taps["latents"] = sparse
        taps["post"] = self.decoder(sparse) + self.pre_bias
        return taps


HEADS: dict[str, Callable[[int, HeadConfig], Head]] = {
    "none": none_head,
    "linear": linear_head,
    "mlp": mlp_head,
    "fixed_reweight": fixed_reweight_head,
    "discrete": discrete_head,
    "topk_sae": TopKSAEHead,
}


def build_head(d: int, cfg: HeadConfig) -> Head:
    """A head by name for d-dimensional encoder features."""
    return HEADS[cfg.name](d, cfg)
