"""Per-op kernels of the batched views (headsweep.views): every op works on a whole batch with
one parameter per sample, and matches the torchvision.transforms.v2.functional op of the same
name applied to that sample on float tensors (tests/test_views.py checks each one per sample).

Colour ops work in place on float (N, 3, H, W) in [0, 1]. Geometry comes in two forms:
`crop_flip` (pad-and-crop shift and flip as one `index_select` on uint8) and the separable
per-sample matrices of `resample_matrices` / `blur_matrices`, applied with `separable`
(out = A_y @ x @ A_x^T as two batched matmuls), which express resized crop, shift, flip and
Gaussian blur alike.

CPU speed notes (BENCHMARKS.md): `torch.where`, `remainder`, comparisons into bool, mixed-dtype
arithmetic and `addcmul` with two per-sample operands are avoided in the dense ops: on the CPU
they are several times slower than plain float arithmetic.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma, with torchvision's 0.2989).
LUMA = (0.2989, 0.587, 0.114)
# Keys' cubic convolution with a = -0.5: PIL's bicubic filter and PyTorch's antialiased bicubic
# (`_upsample_bicubic2d_aa`), which torchvision's resize uses on float tensors with antialias.
CUBIC_A = -0.5
# Gaussian blur: one fixed kernel size for every sigma in (0.1, 2): radius 6 = 3 sigma at the
# largest sigma (the truncated tails hold < 0.3% of the mass, renormalised as torchvision does).
BLUR_KERNEL = 13
SIGMA = (0.1, 2.0)  # Gaussian blur sigma range (solo-learn, SimCLR)
SOLARIZE_THRESHOLD = 128 / 255  # PIL's ImageOps.solarize(img, 128) on [0, 1] floats


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


@lru_cache(maxsize=64)
def _const(
    values: tuple[float, ...], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """A small constant tensor, built once per device and dtype (not per chunk)."""
    return torch.tensor(values, dtype=dtype, device=device).view(shape)


# --------------------------------------------------------------------------- pad-and-crop


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


# --------------------------------------------------------------------------- separable maps


def cubic(t: Tensor) -> Tensor:
    """Keys' cubic kernel, a = -0.5, support (-2, 2)."""
    a, t = CUBIC_A, t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def resample_matrices(
    start: Tensor, length: Tensor, size_in: int, size_out: int, flip: Tensor | None = None
) -> Tensor:
    """Per-sample (M, size_out, size_in) matrices that resample the 1-D window
    [start, start + length) of an axis of size_in pixels to size_out pixels, the way
    torchvision's resized_crop(..., BICUBIC, antialias=True) does on float tensors (PyTorch's
    `_upsample_bicubic2d_aa`, i.e. PIL's resampling): output pixel i has centre
    c = (i + 0.5) length / size_out in window coordinates, its taps are the window pixels u in
    [floor(c - r + 0.5), floor(c + r + 0.5)) clipped to the window, r = 2 max(1, scale), with
    weights cubic((u - c + 0.5) / max(1, scale)) renormalised to sum 1 over the taps kept (taps
    outside the window are dropped, not clamped to its edge).

    start, length: int64 (M,). A window may reach outside the image (start < 0 or
    start + length > size_in): those pixels are zeros (zero padding; weights not renormalised),
    which makes the pad-and-crop shift the window (dy - pad, H) at scale 1 (one-hot rows).
    flip: bool (M,) or None: mirror the output (horizontal flip). Weights are computed in
    float64 and returned as float32; the matrices have at most 2 ceil(r) + 1 non-zeros per row.
    Measured against torchvision.transforms.v2.functional.resized_crop on float32 images
    (tests/test_views.py, with `separable`): max abs error 0 for 32x32 crops resized to 32x32
    (the horizontal pass first, as PyTorch does), 7.9e-7 for other sizes, 1.3e-6 downsampling."""
    m, device = start.shape[0], start.device
    scale_max = max(1.0, size_in / size_out)
    taps = 2 * math.ceil(2.0 * scale_max) + 1
    length = length.to(torch.float64)[:, None, None]
    scale = length / size_out  # (M, 1, 1)
    stretch = scale.clamp(min=1.0)
    i = torch.arange(size_out, device=device, dtype=torch.float64)[None, :, None]
    if flip is not None:  # mirror: output i takes the taps of output size_out - 1 - i
        i = torch.where(flip[:, None, None], size_out - 1 - i, i)
    centre = scale * (i + 0.5)  # (M, size_out, 1)
    support = 2.0 * stretch
    low = torch.floor(centre - support + 0.5).clamp(min=0)
    high = torch.minimum(torch.floor(centre + support + 0.5), length)
    u = low + torch.arange(taps, device=device, dtype=torch.float64)  # (M, size_out, taps)
    weights = cubic((u - centre + 0.5) / stretch) * (u < high)
    weights = weights / weights.sum(-1, keepdim=True)
    column = u + start.to(torch.float64)[:, None, None]  # image coordinates
    outside = (column < 0) | (column >= size_in) | (u >= high)
    column = column.masked_fill(outside, size_in).long()  # a spare column, dropped below
    out = torch.zeros(m, size_out, size_in + 1, device=device, dtype=torch.float64)
    out.scatter_add_(2, column, weights.masked_fill(outside, 0.0))
    return out[:, :, :size_in].float()


# Largest pad-and-crop shift the window tables cover (config: crop_pad <= 16).
MAX_SHIFT = 16


@lru_cache(maxsize=8)
def _window_table(size_in: int, size_out: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Every window a view can use, resampled once: the resized-crop boxes inside the image
    (0 <= start, start + length <= size_in) and the full-size shifts (|start| <= MAX_SHIFT,
    length size_in), unflipped then flipped. Returns (index, table): index[start + MAX_SHIFT,
    length] is the window's row of table (-1: no such window); table (2 K, size_out, size_in)."""
    start = torch.arange(-MAX_SHIFT, max(size_in, MAX_SHIFT + 1), device=device)[:, None]
    length = torch.arange(size_in + 1, device=device)[None, :]
    inside = (start >= 0) & (length >= 1) & (start + length <= size_in)
    shift = (length == size_in) & (start.abs() <= MAX_SHIFT)
    valid = inside | shift
    index = torch.full(valid.shape, -1, dtype=torch.long, device=device)
    index[valid] = torch.arange(int(valid.sum()), device=device)
    starts, lengths = start.expand_as(valid)[valid], length.expand_as(valid)[valid]
    table = resample_matrices(starts, lengths, size_in, size_out)
    return index, torch.cat([table, table.flip(1)])


def window_matrices(
    start: Tensor, length: Tensor, size_in: int, size_out: int, flip: Tensor | None = None
) -> Tensor:
    """`resample_matrices` for windows inside the image or full-size shifts of at most
    MAX_SHIFT px, looked up in a table built once per size and device (the same values; a
    gather instead of ~30 elementwise ops over M size_out taps per call)."""
    index, table = _window_table(size_in, size_out, start.device)
    row = index[start + MAX_SHIFT, length]
    if flip is not None:
        row = row + flip * (len(table) // 2)
    return table.index_select(0, row)


def gaussian_kernels(sigma: Tensor, size: int = BLUR_KERNEL) -> Tensor:
    """(M,) sigmas -> (M, size) normalised 1-D Gaussian kernels, as torchvision's
    _get_gaussian_kernel1d (softmax of -(d / sigma)^2 / 2 over the integer offsets d)."""
    d = torch.arange(size, device=sigma.device, dtype=torch.float64) - (size - 1) / 2
    return torch.softmax(-0.5 * (d / sigma.to(torch.float64)[:, None]) ** 2, dim=1)


@lru_cache(maxsize=16)
def _reflect_taps(n: int, size: int, device: torch.device) -> Tensor:
    """int64 (n, size): the pixel that tap k of output i reads with reflect padding of
    size // 2 (torch.nn.functional.pad mode "reflect": the edge pixel is not repeated)."""
    half = size // 2
    if half >= n:
        raise ValueError(f"blur: kernel {size} needs images larger than {half} px, got {n}")
    j = torch.arange(n, device=device)[:, None] + torch.arange(size, device=device) - half
    j = j.abs()
    return torch.where(j >= n, 2 * (n - 1) - j, j)


def blur_matrices(sigma: Tensor, n: int, size: int = BLUR_KERNEL) -> Tensor:
    """Per-sample (M, n, n) matrices of a 1-D Gaussian blur with reflect padding (the matrix
    form of torchvision's gaussian_blur along one axis, kernel `size`)."""
    kernel = gaussian_kernels(sigma, size).float()  # (M, size)
    columns = _reflect_taps(n, size, sigma.device).expand(len(sigma), n, size)
    out = torch.zeros(len(sigma), n, n, device=sigma.device)
    return out.scatter_add_(2, columns, kernel[:, None, :].expand(-1, n, -1))


def separable(x: Tensor, rows: Tensor, cols: Tensor, out: Tensor | None = None) -> Tensor:
    """out[m, c] = rows[m] @ x[m, c] @ cols[m]^T for x (M, C, H, W), rows (M, Ho, H), cols
    (M, Wo, W): two batched matmuls, the horizontal one with the channels folded into rows."""
    m, c, h, w = x.shape
    across = torch.bmm(x.reshape(m, c * h, w), cols.transpose(1, 2))  # (M, C H, Wo)
    across = across.view(m, c, h, cols.shape[1])
    return torch.matmul(rows[:, None], across, out=out)


# --------------------------------------------------------------------------- colour ops


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


JITTER_OPS = (brightness_, contrast_, saturation_, hue_)


def jitter_(x: Tensor, factors: Tensor, on: tuple[bool | float, ...]) -> Tensor:
    """ColorJitter with given factors (N, 4), in the fixed order brightness, contrast,
    saturation, hue; op k runs only where on[k] is true (an op of strength 0 in every view is
    skipped, as torchvision skips it)."""
    for op, column, active in zip(JITTER_OPS, factors.T, on, strict=True):
        if active:
            op(x, column)
    return x


def gray_(x: Tensor, gray: Tensor) -> Tensor:
    """rgb_to_grayscale(x, 3) where `gray` (bool (N,)) is set, in place, dense:
    x <- x (1 - g) + g luma(x)."""
    gw = _col(gray.to(x.dtype))
    luma = grayscale(x).mul_(gw)
    return x.mul_(1 - gw).add_(luma)


def solarize_(x: Tensor, rows: Tensor) -> Tensor:
    """solarize(x, 128/255) on the views `rows` (int64 index), in place:
    x -> 1 - x where x >= 128/255 (torchvision's solarize on floats)."""
    part = x.index_select(0, rows)
    part = torch.where(part >= SOLARIZE_THRESHOLD, 1 - part, part)
    return x.index_copy_(0, rows, part)


def normalize_(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(x - mean) / std per channel, in place."""
    inv_std = _const(tuple(1 / s for s in std), (1, 3, 1, 1), x.device, x.dtype)
    return x.sub_(_const(mean, (1, 3, 1, 1), x.device, x.dtype)).mul_(inv_std)


def gray_normalize_(
    x: Tensor, gray: Tensor | None, mean: tuple[float, ...], std: tuple[float, ...]
) -> Tensor:
    """Grayscale the views where `gray` (bool (N,)) is set, then normalize with mean/std, in
    place: x <- (x (1 - g) + g luma(x) - mean) / std, three passes instead of a select."""
    if gray is None:
        return normalize_(x, mean, std)
    mean_t = _const(mean, (1, 3, 1, 1), x.device, x.dtype)
    inv_std = _const(tuple(1 / s for s in std), (1, 3, 1, 1), x.device, x.dtype)
    gw = _col(gray.to(x.dtype))
    luma = grayscale(x)
    return x.mul_((1 - gw) * inv_std).addcmul_(luma, gw * inv_std).sub_(mean_t * inv_std)


# --------------------------------------------------------------------------- digit composition


def digit_weight(d: Tensor, keep: Tensor | None, strength: float, soft_mask: bool) -> Tensor:
    """s m keep: float (B, 1, H, W) from the digit layer d in [0, 1]."""
    m = d if soft_mask else torch.gt(d, 0, out=torch.empty_like(d))
    scale = strength if keep is None else _col(keep.to(d.dtype) * strength)
    return m * scale


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
    weight = digit_weight(d, keep, strength, soft_mask)
    return x.mul_(1 - weight).add_(weight * d)


def compose_scaled(
    layers: Tensor,
    keep: Tensor,
    scale: Tensor,
    strength: float,
    soft_mask: bool,
    out: Tensor | None = None,
) -> Tensor:
    """Digit composition and a per-view multiply in one pass (written into `out` if given).
    layers: float (M, 3 or 4, H, W) in [0, 255] (objects, then the digit; modified);
    scale: (M,), e.g. brightness / 255. out = scale * 255 * compose(...) (M, 3, H, W)."""
    objects, scale = layers[:, :3], _col(scale)
    if layers.shape[1] == 3 or strength == 0:
        return torch.mul(objects, scale, out=out)
    d = layers[:, 3:].mul_(1 / 255)
    weight = digit_weight(d, keep, strength, soft_mask)
    # out = C (1 - w) b / 255 + w D b: the digit term plus the object term, one addcmul.
    digit = d.mul_(weight).mul_(scale * 255)
    return torch.addcmul(digit, objects, weight.neg_().add_(1).mul_(scale), out=out)
