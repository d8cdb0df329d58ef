"""Augmented views of a batch, built with batched tensor ops on the data's device.

Every view draws its own random parameters, but there is no per-sample Python loop and no
DataLoader: the whole batch is transformed at once (the approach of KellerJordan/cifar10-airbench),
deterministically given the `torch.Generator`.

Recipes (docs/science.md §4.2, §8): view 1 of every sample follows `aug.view1`, view 2 `aug.view2`
(asymmetric recipes such as `barlow_cifar`, where only view 2 solarizes). Per view, in order:

1. digit composition: x = (1 - s m) C + s m D, the digit dropped in exactly one view of a pair
   with probability p_drop (`digit_keep`);
2. geometry: RandomResizedCrop(size, scale=(crop_min_scale, crop_max_scale), ratio=(3/4, 4/3),
   bicubic, antialias) when crop_min_scale < 1, else the pad-and-crop shift
   RandomCrop(size, padding=crop_pad) (crop_pad 0: none). The box is drawn with torchvision's
   RandomResizedCrop.get_params algorithm (10 attempts, the first valid one, else the centre crop
   with the ratio clamped), all attempts of all views at once. Resampling: PIL-style bicubic
   (Keys a = -0.5, taps outside the box dropped and renormalised): the kernel of torchvision's
   resized_crop(..., BICUBIC, antialias=True) on float tensors, max abs error measured 0 for
   32x32 images (7.9e-7 at other sizes, 1.3e-6 downsampling); then clamped to [0, 1], as PIL's
   uint8 output is (torchvision leaves the bicubic overshoot in float tensors);
3. horizontal flip with `horizontal_flip_prob` (done with the geometry; it commutes with every
   later op: they are per pixel, per image, or a symmetric blur with symmetric padding);
4. ColorJitter(brightness, contrast, saturation, hue) with `color_jitter_prob`, torchvision's
   factor ranges and clamping;
5. grayscale with `gray_scale_prob`;
6. Gaussian blur with `gaussian_prob`: sigma ~ U(0.1, 2.0) per view, kernel 13 (radius 6 =
   3 sigma at sigma 2), reflect padding, as torchvision's gaussian_blur (when no view
   solarizes, the blur runs before the grayscale: both are linear and commute exactly);
7. solarization with `solarization_prob`: x -> 1 - x where x >= 128/255;
8. normalisation with the dataset's mean/std (`headsweep.data.STATS`, CIFAR-10's otherwise).

Deliberate, documented deviation: the four jitter ops run in the fixed order brightness,
contrast, saturation, hue; torchvision's ColorJitter permutes them per call. A per-sample order
would cost about 4x the jitter time on the CPU (each op at every position, or 24 permutation
groups of a few views each), so it is not done.

Vector data: the per-feature drop / sign flip of §4.1 (`headsweep.data.synthetic`).

Structure: `draw` makes every random decision for the views of a batch (`ViewParams`); `render`
is a deterministic function of the data and those parameters, built from the per-op kernels of
`headsweep.view_ops` (each checked against torchvision.transforms.v2.functional per sample in
tests/test_views.py). Ops that no view uses are neither drawn nor run.

Speed on the CPU (benchmarks/run.py, BENCHMARKS.md): all views go through one set of kernels as
one batch; without a resized crop, shift and flip run on uint8 as a single `index_select` and
brightness rides on the uint8 -> float scale; with one, geometry is two batched matmuls with
per-view matrices (`view_ops.resample_matrices`, looked up in a table of every window built
once per image size), which also carry the flip and, for views of other recipes in the same
batch, the shift; the blur is two more, on the blurred views only. The float work runs in
chunks of ~128 views written straight into the output, so every op is an in-place pass over
cache-resident data; ops that skip a view get identity parameters instead of a masked select
(dense, no host sync), except blur and solarization, which run on the selected views only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from headsweep.config import AugConfig, DataConfig, ViewConfig
from headsweep.crop_boxes import crop_boxes
from headsweep.data import STATS
from headsweep.data.base import Split
from headsweep.data.synthetic import embed, feature_views
from headsweep.view_ops import (
    SIGMA,
    blur_matrices,
    compose,
    compose_scaled,
    crop_flip,
    gray_,
    gray_normalize_,
    jitter_,
    normalize_,
    separable,
    solarize_,
    window_matrices,
)

# CIFAR-10 channel statistics: the fallback for datasets without their own entry in STATS.
MEAN, STD = STATS["cifar10"]
IDENTITY_FACTORS = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue


def stats(data: DataConfig | str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel for a dataset (DataConfig or name); CIFAR-10's by default."""
    name = data.name if isinstance(data, DataConfig) else data
    return STATS.get(name or "", (MEAN, STD))


def normalize(x: Tensor, data: DataConfig | str | None = None) -> Tensor:
    """(x - mean) / std per channel with the dataset's statistics; grey inputs (1 channel) use
    the mean of the three."""
    m, s = stats(data)
    mean = torch.tensor(m, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(s, device=x.device).view(1, 3, 1, 1)
    if x.shape[1] != 3:
        mean, std = mean.mean(1, keepdim=True), std.mean(1, keepdim=True)
    return (x - mean) / std


# --------------------------------------------------------------------------- random draws


@dataclass
class ViewParams:
    """Every random decision for M views. Rows are grouped by view config: for two views of
    B samples, rows [0, B) are view 1 and [B, 2B) view 2 of the same samples. An op that no
    view uses is None. Geometry is either the shift (`dy`, `dx` in [0, 2 pad], pad-and-crop of
    the zero-padded image) or, when some view uses a resized crop, `box` for every row
    (a shift is the box (dy - pad, dx - pad, H, W))."""

    source: Tensor  # int64 (M,): sample index in the batch
    keep: Tensor  # bool (M,): digit kept
    size: tuple[int, int]  # (H, W) of the images
    pad: int = 0  # shift path: the zero padding all rows' offsets refer to
    dy: Tensor | None = None  # int64 (M,)
    dx: Tensor | None = None
    box: Tensor | None = None  # int64 (M, 4): top, left, height, width
    flip: Tensor | None = None  # bool (M,)
    jitter: Tensor | None = None  # bool (M,): colour jitter applied
    # float32 (M, 4): brightness, contrast, saturation, hue; identity where not jittered
    factors: Tensor | None = None
    jitter_ops: tuple[bool, bool, bool, bool] = (False, False, False, False)  # ops run at all
    gray: Tensor | None = None  # bool (M,)
    blur: Tensor | None = None  # bool (M,)
    sigma: Tensor | None = None  # float32 (M,): blur sigma (drawn for every row)
    solarize: Tensor | None = None  # bool (M,)


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


def _per_row(values: Sequence[float], n: int, device: torch.device) -> Tensor:
    """One value per view config -> (len(values) n,): each repeated for its n rows."""
    return torch.tensor(values, dtype=torch.float32, device=device).repeat_interleave(n)


def _draw_views(
    n: int,
    views: Sequence[ViewConfig],
    keep: Tensor,
    size: tuple[int, int],
    g: torch.Generator,
    device: torch.device,
) -> ViewParams:
    """Parameters for len(views) n rows, rows [k n, (k + 1) n) following views[k], drawn from
    `g` in a fixed order (geometry, flip, jitter, grayscale, blur, solarization); ops with
    probability 0 in every view draw nothing."""
    m = n * len(views)
    p = ViewParams(torch.arange(n, device=device).repeat(len(views)), keep, size)

    def rows(name: str) -> Tensor | float:
        """The setting per row, or one number when every view has the same."""
        values = [getattr(v, name) for v in views]
        same = all(x == values[0] for x in values)
        return values[0] if same else _per_row(values, n, device)

    def chance(name: str) -> Tensor | None:
        if not any(getattr(v, name) for v in views):
            return None
        return torch.rand(m, generator=g, device=device) < rows(name)

    pads = [0 if v.resized_crop else v.crop_pad for v in views]
    p.pad = max(pads)
    if p.pad and all(k == p.pad for k in pads):  # offsets in [0, 2 pad]
        offsets = torch.randint(0, 2 * p.pad + 1, (2, m), generator=g, device=device)
        p.dy, p.dx = offsets[0], offsets[1]
    elif p.pad:  # offsets in [0, 2 pad_k] of the view's padding, moved to the common padding
        span = _per_row([2 * k + 1 for k in pads], n, device)
        offsets = (torch.rand(2, m, generator=g, device=device) * span).floor().long()
        offsets = offsets.minimum(span.long() - 1) + (p.pad - _per_row(pads, n, device).long())
        p.dy, p.dx = offsets[0], offsets[1]
    if any(v.resized_crop for v in views):
        low = _per_row([v.crop_min_scale for v in views], n, device)
        high = _per_row([v.crop_max_scale for v in views], n, device)
        box = crop_boxes(low, high, size, g)
        shift = torch.zeros(m, 4, dtype=torch.long, device=device)
        shift[:, 2], shift[:, 3] = size
        if p.dy is not None and p.dx is not None:
            shift[:, 0], shift[:, 1] = p.dy - p.pad, p.dx - p.pad
        p.box = torch.where((low < 1)[:, None], box, shift)
        p.pad, p.dy, p.dx = 0, None, None
    p.flip = chance("horizontal_flip_prob")
    used = [any(v.color_jitter_prob > 0 and v.jitter[k] > 0 for v in views) for k in range(4)]
    p.jitter_ops = (used[0], used[1], used[2], used[3])
    if any(p.jitter_ops):
        p.jitter = chance("color_jitter_prob")
        ranges = torch.tensor(
            [factor_ranges(v.jitter) for v in views], dtype=torch.float32, device=device
        )  # (views, 4, 2)
        if all(v.jitter == views[0].jitter for v in views):
            ranges = ranges[0]  # (4, 2), broadcast over the rows
        else:
            ranges = ranges.repeat_interleave(n, 0)  # (M, 4, 2)
        low, high = ranges[..., 0], ranges[..., 1]
        factors = torch.rand(m, 4, generator=g, device=device) * (high - low) + low
        identity = torch.tensor(IDENTITY_FACTORS, device=device)
        assert p.jitter is not None  # some view jitters: drawn above
        p.factors = torch.where(p.jitter[:, None], factors, identity)  # (M, 4): tiny
    p.gray = chance("gray_scale_prob")
    p.blur = chance("gaussian_prob")
    if p.blur is not None:
        p.sigma = SIGMA[0] + (SIGMA[1] - SIGMA[0]) * torch.rand(m, generator=g, device=device)
    p.solarize = chance("solarization_prob")
    return p


def draw(
    n: int,
    aug: AugConfig,
    g: torch.Generator,
    device: torch.device,
    size: tuple[int, int] = (32, 32),
) -> ViewParams:
    """All random parameters of both views of n samples of (H, W) = size, drawn from `g` in a
    fixed order: the digit's keep/drop per pair first, then `_draw_views`."""
    keep1, keep2 = digit_keep(n, aug.p_drop, g, device)
    return _draw_views(n, aug.views, torch.cat([keep1, keep2]), size, g, device)


# --------------------------------------------------------------------------- rendering

# Pixels per chunk and torch thread (128 views of 32x32): each core's share of a chunk's
# temporaries (~40 bytes per pixel) stays in its cache, and with more threads the chunks grow so
# that there are fewer parallel regions. On the 2-core EPYC of BENCHMARKS.md: 1 thread, 64-192
# views per chunk are equally fast, 256 1.2-1.5x slower, all 1024 at once 2x; 2 threads, 256-512.
CHUNK_PIXELS = 128 * 32 * 32


def _blur_(x: Tensor, blur: Tensor, sigma: Tensor) -> Tensor:
    """Gaussian blur (kernel BLUR_KERNEL, reflect padding) of the views where `blur` is set."""
    rows = blur.nonzero().squeeze(1)
    if rows.numel():
        part = x.index_select(0, rows)
        s = sigma.index_select(0, rows)
        part = separable(part, blur_matrices(s, x.shape[2]), blur_matrices(s, x.shape[3]))
        x.index_copy_(0, rows, part)
    return x


def _finish_(x: Tensor, p: ViewParams, part: slice, mean: tuple, std: tuple) -> Tensor:
    """Grayscale, blur, solarization and normalisation of the chunk `part`, in place."""
    gray = None if p.gray is None else p.gray[part]
    if p.solarize is None:  # blur before grayscale: both linear, they commute
        if p.blur is not None and p.sigma is not None:
            _blur_(x, p.blur[part], p.sigma[part])
        return gray_normalize_(x, gray, mean, std)
    if gray is not None:
        gray_(x, gray)
    if p.blur is not None and p.sigma is not None:
        _blur_(x, p.blur[part], p.sigma[part])
    rows = p.solarize[part].nonzero().squeeze(1)
    if rows.numel():
        solarize_(x, rows)
    return normalize_(x, mean, std)


def render(
    images: Tensor, overlay: Tensor | None, p: ViewParams, data: DataConfig, chunk: int = 0
) -> Tensor:
    """Deterministic view pipeline: uint8 images (B, 3, H, W) and digit layer (B, 1, H, W) or
    None -> normalized float32 (M, 3, H, W) views for the parameters p (M views).

    The float work runs chunk by chunk directly in the output, so every op is in place on
    cache-resident data (the same arithmetic as one big batch). `chunk`: views per chunk,
    0 = CHUNK_PIXELS per torch thread on the CPU, all at once on a GPU (where chunks would only
    multiply kernel launches)."""
    if images.shape[1] != 3:
        raise ValueError(
            f"views: the colour recipe needs RGB images, got {images.shape[1]} channels"
        )
    if tuple(images.shape[2:]) != p.size:
        raise ValueError(f"views: parameters drawn for size {p.size}, images {images.shape[2:]}")
    layers = images if overlay is None else torch.cat([images, overlay], 1)
    if p.box is not None:  # resized crop: compose first, resample in float
        layers = layers.index_select(0, p.source)
    elif p.dy is not None or p.flip is not None:  # shift and flip on uint8
        zero = torch.zeros_like(p.source)
        dy, dx = (zero, zero) if p.dy is None or p.dx is None else (p.dy, p.dx)
        layers = crop_flip(layers, p.source, dy, dx, p.flip, p.pad)
    else:
        layers = layers.index_select(0, p.source)
    mean, std = stats(data)
    ops = p.jitter_ops
    m, _, h, w = layers.shape
    one = torch.full((m,), 1 / 255, device=layers.device)
    if not chunk:
        cpu = layers.device.type == "cpu"
        chunk = max(1, CHUNK_PIXELS * torch.get_num_threads() // (h * w)) if cpu else m
    out = torch.empty(m, 3, h, w, device=layers.device)
    for i in range(0, m, chunk):
        part = slice(i, i + chunk)
        factors = None if p.factors is None else p.factors[part]
        if p.box is None:
            # Brightness rides on the uint8 -> float scale (1 / 255) of the compose pass.
            scale = factors[:, 0] / 255 if ops[0] and factors is not None else one[part]
            x = compose_scaled(
                layers[part].float(), p.keep[part], scale, data.strength, data.soft_mask, out[part]
            )
            if ops[0]:
                x.clamp_(0, 1)
            rest = (False, *ops[1:])
        else:
            x = compose_scaled(
                layers[part].float(), p.keep[part], one[part], data.strength, data.soft_mask
            )
            box = p.box[part]
            flip = None if p.flip is None else p.flip[part]
            x = separable(
                x,
                window_matrices(box[:, 0], box[:, 2], h, h),
                window_matrices(box[:, 1], box[:, 3], w, w, flip),
                out=out[part],
            ).clamp_(0, 1)
            rest = ops
        if factors is not None:
            jitter_(x, factors, rest)
        _finish_(x, p, part, mean, std)
    return out


# --------------------------------------------------------------------------- entry points


def two_views(
    batch: Split, aug: AugConfig, data: DataConfig, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Both augmented views of a batch: float (B, C, H, W) images or (B, dim) vectors. View 1
    follows aug.view1, view 2 aug.view2."""
    if batch.inputs.is_floating_point():  # vector data: inputs are the latents z
        return feature_views(
            batch.inputs, data.phi, data.dim, data.noise, aug.feature_drop, aug.sign_flip, g
        )
    size = (int(batch.inputs.shape[2]), int(batch.inputs.shape[3]))
    p = draw(len(batch), aug, g, batch.inputs.device, size)
    views = render(batch.inputs, batch.overlay, p, data)
    return views[: len(batch)], views[len(batch) :]


def augment(batch: Split, view: ViewConfig, data: DataConfig, g: torch.Generator) -> Tensor:
    """One augmented view per sample (the digit always kept): normalized float (B, 3, H, W).
    For the linear-evaluation protocol (training images through a crop + flip view)."""
    if batch.inputs.is_floating_point():
        raise ValueError("augment: image data only (vector data has no image view)")
    n, device = len(batch), batch.inputs.device
    keep = torch.ones(n, dtype=torch.bool, device=device)
    size = (int(batch.inputs.shape[2]), int(batch.inputs.shape[3]))
    p = _draw_views(n, (view,), keep, size, g, device)
    return render(batch.inputs, batch.overlay, p, data)


def clean_view(batch: Split, data: DataConfig, g: torch.Generator) -> Tensor:
    """Un-augmented inputs for probes: the digit always present at strength s; vector data gets
    noise from `g` (seed it for a fixed probe set)."""
    if batch.inputs.is_floating_point():
        return embed(batch.inputs, data.phi, data.dim, data.noise, g)
    composed = compose(batch.inputs, batch.overlay, None, data.strength, data.soft_mask)
    return normalize(composed, data)
