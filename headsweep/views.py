"""Two views of a batch, built with batched tensor ops on the data's device.

Every view draws its own random parameters, but there is no per-sample Python loop and no
DataLoader: the whole batch is transformed at once (the approach of KellerJordan/cifar10-airbench).
Image recipe (SCIENCE.md §4.2, the SAS/[X] SimCLR views), torchvision's semantics per op:
compose the digit layer, pad-and-crop shift (RandomCrop(padding=pad)), horizontal flip, colour
jitter (brightness, contrast, saturation, hue with torchvision's factor ranges and clamping,
applied together with probability `jitter_p`), grayscale, normalize. The one deliberate
difference: the four jitter ops run in a fixed order rather than a random one per sample.
Vector data: the per-feature drop / sign flip of §4.1 (`headsweep.data.synthetic`).

Structure: `draw` makes every random decision for the 2B views of a batch (`ViewParams`);
`render` is a deterministic function of the data and those parameters, built from small in-place
ops that each match a torchvision function (tests/test_views.py checks them against
torchvision.transforms.functional per sample).

Speed on the CPU (benchmarks/run.py, BENCHMARKS.md): both views go through one set of kernels as
a batch of 2B; crop and flip run on uint8 as a single `index_select`; the float work runs in
chunks of ~128 views written straight into the output, so every op is an in-place pass over
cache-resident data (ops that allocate fresh 12 MB outputs run ~4x slower); ops that do not apply
to a view get identity parameters instead of a masked select (dense, no host sync); `torch.where`,
`remainder`, comparisons into bool, mixed-dtype arithmetic and `addcmul` with two per-sample
operands are avoided: on the CPU they are several times slower than plain float arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from headsweep.config import AugConfig, DataConfig
from headsweep.data.base import Split
from headsweep.data.synthetic import embed, feature_views

# CIFAR-10 channel statistics; used for every image dataset (only conditions the input scale).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma, with torchvision's 0.2989).
LUMA = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------------- random draws


@dataclass
class ViewParams:
    """Every random decision for M = 2B views; rows [0, B) are view 1, [B, 2B) view 2 of the
    same samples. `factors` columns: brightness, contrast, saturation, hue, set to the identity
    (1, 1, 1, 0) for views that skip the jitter."""

    source: Tensor  # int64 (M,): sample index in the batch
    keep: Tensor  # bool (M,): digit kept
    dy: Tensor  # int64 (M,): crop offset in [0, 2 pad] (pad = the identity)
    dx: Tensor  # int64 (M,)
    flip: Tensor  # bool (M,)
    jitter: Tensor  # bool (M,): colour jitter applied
    factors: Tensor  # float32 (M, 4)
    gray: Tensor  # bool (M,)


def _chance(n: int, p: float, g: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=g, device=device) < p


def digit_keep(
    n: int, p_drop: float, g: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Per pair, with probability p_drop exactly one view (chosen at random) drops the digit.
    Returns bool (n,) keep masks for view 1 and view 2; never both dropped."""
    drop = _chance(n, p_drop, g, device)
    first = _chance(n, 0.5, g, device)
    return ~(drop & first), ~(drop & ~first)


def factor_ranges(jitter: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """torchvision ColorJitter's ranges: [max(0, 1 - v), 1 + v] for brightness, contrast and
    saturation, [-v, v] for hue."""
    b, c, s, h = jitter
    return [(max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h)]


def draw(n: int, aug: AugConfig, g: torch.Generator, device: torch.device) -> ViewParams:
    """All random parameters of both views of n samples, drawn from `g` in a fixed order."""
    m = 2 * n
    keep1, keep2 = digit_keep(n, aug.p_drop, g, device)
    shifts = torch.randint(0, 2 * aug.crop_pad + 1, (2, m), generator=g, device=device)
    flip = _chance(m, aug.flip, g, device)
    jitter = _chance(m, aug.jitter_p, g, device)
    low, high = torch.tensor(factor_ranges(aug.jitter), device=device).T
    factors = torch.rand(m, 4, generator=g, device=device) * (high - low) + low
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device)
    factors = torch.where(jitter[:, None], factors, identity)  # (M, 4): tiny
    gray = _chance(m, aug.gray_p, g, device)
    source = torch.arange(n, device=device).repeat(2)
    return ViewParams(
        source, torch.cat([keep1, keep2]), shifts[0], shifts[1], flip, jitter, factors, gray
    )


# --------------------------------------------------------------------------- geometry


def crop_flip(
    x: Tensor, source: Tensor, dy: Tensor, dx: Tensor, flip: Tensor | None, pad: int
) -> Tensor:
    """out[j] = hflip?(zero_pad(x[source[j]], pad)[:, dy[j] : dy[j] + H, dx[j] : dx[j] + W]).

    x: (N, C, H, W), any dtype; source, dy, dx: int64 (M,); flip: bool (M,) or None.
    Returns (M, C, H, W). One `index_select` over an overlapping strided view of the padded
    images: window k starts at flat offset k, so (image, dy, dx) is the single index
    image * C Hp Wp + dy Wp + dx. A flipped crop is the crop of the flipped padded image at
    2 pad - dx, so flips only need a flipped copy of the (small) padded batch."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x.contiguous()
    hp, wp = h + 2 * pad, w + 2 * pad
    if flip is not None:
        padded = torch.cat([padded, padded.flip(3)])
        source = source + n * flip
        dx = torch.where(flip, 2 * pad - dx, dx)
    start = source * (c * hp * wp) + dy * wp + dx
    # Number of windows: the last one still ends inside the storage.
    count = padded.numel() - (c - 1) * hp * wp - (h - 1) * wp - (w - 1)
    windows = padded.reshape(-1).as_strided((count, c, h, w), (1, hp * wp, wp, 1))
    return windows.index_select(0, start)


# --------------------------------------------------------------------------- colour ops
# Each op works in place on float (N, 3, H, W) in [0, 1] with one factor per sample, factor
# (N,), and matches the torchvision.transforms.functional op of the same name on float tensors.


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


@lru_cache(maxsize=64)
def _const(
    values: tuple[float, ...], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """A small constant tensor, built once per device and dtype (not per chunk)."""
    return torch.tensor(values, dtype=dtype, device=device).view(shape)


def grayscale(x: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma, as torchvision's rgb_to_grayscale."""
    r, g, b = x.unbind(1)
    return torch.mul(r, LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).unsqueeze(1)


def brightness_(x: Tensor, factor: Tensor) -> Tensor:
    """adjust_brightness: clamp(f x, 0, 1)."""
    return x.mul_(_col(factor)).clamp_(0, 1)


def contrast_(x: Tensor, factor: Tensor) -> Tensor:
    """adjust_contrast: clamp(f x + (1 - f) mean(gray(x)), 0, 1); the image mean of the luma
    is the luma of the channel means."""
    mean = x.mean((2, 3)) @ _const(LUMA, (3,), x.device, x.dtype)  # (N,)
    # mul_ + add_: addcmul with two per-sample operands misses the vectorized CPU loop (6x).
    return x.mul_(_col(factor)).add_(_col((1 - factor) * mean)).clamp_(0, 1)


def saturation_(x: Tensor, factor: Tensor) -> Tensor:
    """adjust_saturation: clamp(f x + (1 - f) gray(x), 0, 1)."""
    gray = grayscale(x).mul_(_col(1 - factor))
    return x.mul_(_col(factor)).add_(gray).clamp_(0, 1)


def hue_(x: Tensor, factor: Tensor) -> Tensor:
    """adjust_hue: RGB -> HSV, h <- (h + f) mod 1, HSV -> RGB; factor in [-0.5, 0.5].

    Exact closed forms instead of torchvision's per-sector selects, ~23 cheap elementwise ops.
    RGB -> hue: two compare-swaps sort the channels (the branch-free RGB->HSV of Sam Hocevar,
    lolengine.net); with the offset k they imply, h = |k + (mid - low) / (6 chroma)|.
    Hue -> RGB: channel n is low + chroma * clamp(6 d_n - 1, 0, 1), d_n the circular distance
    between h + f + n/6 and 1/3 turn for n = 5, 3, 1 (R, G, B): the standard alternative
    HSV->RGB formula v - chroma * clamp(min(t, 4 - t), 0, 1), t = (6h + n) mod 6, folded so
    that `frac` replaces the slow `remainder` and one clamp does the piecewise part:
    out = (low - chroma) + 6 chroma * clamp(d_n, 1/6, 1/3)."""
    r, g, b = x.unbind(1)
    hi, lo, g_lt_b, r_lt_hi, top, low = (torch.empty_like(r) for _ in range(6))
    torch.maximum(g, b, out=hi)
    torch.minimum(g, b, out=lo)
    torch.lt(g, b, out=g_lt_b)  # 1.0 where the first swap happens
    torch.lt(r, hi, out=r_lt_hi)  # 1.0 where the second one does
    torch.maximum(r, hi, out=top)  # v
    mid = torch.minimum(r, hi, out=hi)
    torch.minimum(mid, lo, out=low)
    numerator = mid.sub_(lo)
    chroma = top.sub_(low)
    # 6 chroma + eps: the eps keeps grey pixels (chroma 0, numerator 0) at hue 0, not NaN;
    # their output is v whatever the hue.
    chroma6 = torch.add(_const((1e-20,), (), x.device, x.dtype), chroma, alpha=6, out=lo)
    # Offset in turns: -1 after the first swap, then -1/3 - (that) after the second.
    second = torch.add(_const((-1 / 3,), (), x.device, x.dtype), g_lt_b, alpha=2)
    offset = r_lt_hi.mul_(second).sub_(g_lt_b)
    hue = torch.addcdiv(offset, numerator, chroma6, out=offset).abs_()
    base = low.sub_(chroma).unsqueeze(1)  # low - chroma
    # Turns to add per view and channel: the hue factor, n/6, -1/3 + 1/2 for the circular
    # distance, + 1 so that frac's argument is positive (hue + factor >= -0.5).
    shift = _const((2.0, 5 / 3, 4 / 3), (1, 3, 1, 1), x.device, x.dtype) + _col(factor)
    d = torch.add(hue.unsqueeze(1), shift, out=x).frac_().sub_(0.5).abs_()  # (N, 3, H, W)
    return d.clamp_(1 / 6, 1 / 3).mul_(chroma6.unsqueeze(1)).add_(base)


def jitter_(x: Tensor, factors: Tensor, strength: tuple[float, ...]) -> Tensor:
    """ColorJitter with given factors (N, 4), in the fixed order brightness, contrast,
    saturation, hue; an op whose strength is 0 is skipped, as torchvision does."""
    for op, column, on in zip(
        (brightness_, contrast_, saturation_, hue_), factors.T, strength, strict=True
    ):
        if on:
            op(x, column)
    return x


def gray_normalize_(x: Tensor, gray: Tensor | None) -> Tensor:
    """Grayscale the views where `gray` (bool (N,)) is set, then normalize with MEAN/STD, in
    place: x <- (x (1 - g) + g luma(x) - mean) / std, three passes instead of a select."""
    mean = _const(MEAN, (1, 3, 1, 1), x.device, x.dtype)
    inv_std = _const(tuple(1 / s for s in STD), (1, 3, 1, 1), x.device, x.dtype)
    if gray is None:
        return x.sub_(mean).mul_(inv_std)
    gw = _col(gray.to(x.dtype))
    luma = grayscale(x)
    return x.mul_((1 - gw) * inv_std).addcmul_(luma, gw * inv_std).sub_(mean * inv_std)


def normalize(x: Tensor) -> Tensor:
    """(x - MEAN) / STD per channel; grey inputs (1 channel) use one shared statistic."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    if x.shape[1] != 3:
        mean, std = mean.mean(1, keepdim=True), std.mean(1, keepdim=True)
    return (x - mean) / std


# --------------------------------------------------------------------------- composition


def compose(
    images: Tensor, overlay: Tensor | None, keep: Tensor | None, strength: float, soft_mask: bool
) -> Tensor:
    """uint8 objects C (B, 3, H, W) and digits D (B, 1, H, W) -> float (B, 3, H, W) in [0, 1]:
    x = (1 - s m) C + s m D where the digit is kept, x = C where it is dropped ([X] §4.2);
    m = D (soft) or 1[D > 0]. `keep`: bool (B,) or None (keep all)."""
    x = images.float().div_(255)
    if overlay is None or strength == 0:
        return x
    d = overlay.float().div_(255)
    weight = _digit_weight(d, keep, strength, soft_mask)
    return x.mul_(1 - weight).add_(weight * d)


def _digit_weight(d: Tensor, keep: Tensor | None, strength: float, soft_mask: bool) -> Tensor:
    """s m keep: float (B, 1, H, W) from the digit layer d in [0, 1]."""
    m = d if soft_mask else torch.gt(d, 0, out=torch.empty_like(d))
    scale = strength if keep is None else _col(keep.to(d.dtype) * strength)
    return m * scale


def _compose_scaled_(
    layers: Tensor, keep: Tensor, scale: Tensor, data: DataConfig, out: Tensor
) -> Tensor:
    """Digit composition and the brightness multiply in one pass, written into `out`.
    layers: float (M, 3 or 4, H, W) in [0, 255] (objects, then the digit; modified);
    scale: (M,) = brightness / 255. out = brightness * compose(...) (M, 3, H, W), unclamped."""
    objects, scale = layers[:, :3], _col(scale)
    if layers.shape[1] == 3 or data.strength == 0:
        return torch.mul(objects, scale, out=out)
    d = layers[:, 3:].mul_(1 / 255)
    weight = _digit_weight(d, keep, data.strength, data.soft_mask)
    # out = C (1 - w) b / 255 + w D b: the digit term plus the object term, one addcmul.
    digit = d.mul_(weight).mul_(scale * 255)
    return torch.addcmul(digit, objects, weight.neg_().add_(1).mul_(scale), out=out)


# Pixels per chunk and torch thread (128 views of 32x32): each core's share of a chunk's
# temporaries (~40 bytes per pixel) stays in its cache, and with more threads the chunks grow so
# that there are fewer parallel regions. On the 2-core EPYC of BENCHMARKS.md: 1 thread, 64-192
# views per chunk are equally fast, 256 1.2-1.5x slower, all 1024 at once 2x; 2 threads, 256-512.
CHUNK_PIXELS = 128 * 32 * 32


def render(
    images: Tensor,
    overlay: Tensor | None,
    p: ViewParams,
    aug: AugConfig,
    data: DataConfig,
    chunk: int = 0,
) -> Tensor:
    """Deterministic view pipeline: uint8 images (B, 3, H, W) and digit layer (B, 1, H, W) or
    None -> normalized float32 (M, 3, H, W) views for the parameters p (M views).

    Geometry runs once on uint8; the float work runs chunk by chunk directly in the output, so
    every op is in place on cache-resident data (the same arithmetic as one big batch).
    `chunk`: views per chunk, 0 = CHUNK_PIXELS per torch thread on the CPU, all at once on a
    GPU (where chunks would only multiply kernel launches)."""
    if images.shape[1] != 3:
        raise ValueError(
            f"views: the colour recipe needs RGB images, got {images.shape[1]} channels"
        )
    layers = images if overlay is None else torch.cat([images, overlay], 1)
    layers = crop_flip(layers, p.source, p.dy, p.dx, p.flip if aug.flip else None, aug.crop_pad)
    strength = aug.jitter if aug.jitter_p else (0.0, 0.0, 0.0, 0.0)
    # Brightness rides on the uint8 -> float scale (1 / 255) of the compose pass.
    scale = (p.factors[:, 0] if strength[0] else torch.ones_like(p.factors[:, 0])) / 255
    gray = p.gray if aug.gray_p else None
    m, _, h, w = layers.shape
    if not chunk:
        cpu = layers.device.type == "cpu"
        chunk = max(1, CHUNK_PIXELS * torch.get_num_threads() // (h * w)) if cpu else m
    out = torch.empty(m, 3, h, w, device=layers.device)
    for i in range(0, m, chunk):
        part = slice(i, i + chunk)
        x = _compose_scaled_(layers[part].float(), p.keep[part], scale[part], data, out[part])
        if strength[0]:
            x.clamp_(0, 1)  # brightness was folded into the compose pass
        jitter_(x, p.factors[part], (0.0, *strength[1:]))
        gray_normalize_(x, None if gray is None else gray[part])
    return out


# --------------------------------------------------------------------------- entry points


def two_views(
    batch: Split, aug: AugConfig, data: DataConfig, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Both augmented views of a batch: float (B, C, H, W) images or (B, dim) vectors."""
    if batch.inputs.is_floating_point():  # vector data: inputs are the latents z
        return feature_views(
            batch.inputs, data.phi, data.dim, data.noise, aug.feature_drop, aug.sign_flip, g
        )
    p = draw(len(batch), aug, g, batch.inputs.device)
    views = render(batch.inputs, batch.overlay, p, aug, data)
    return views[: len(batch)], views[len(batch) :]


def clean_view(batch: Split, data: DataConfig, g: torch.Generator) -> Tensor:
    """Un-augmented inputs for probes: the digit always present at strength s; vector data gets
    noise from `g` (seed it for a fixed probe set)."""
    if batch.inputs.is_floating_point():
        return embed(batch.inputs, data.phi, data.dim, data.noise, g)
    return normalize(compose(batch.inputs, batch.overlay, None, data.strength, data.soft_mask))
