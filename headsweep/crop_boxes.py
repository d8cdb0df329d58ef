"""RandomResizedCrop's box sampler (torchvision's `get_params`), batched over views."""

from __future__ import annotations

import math

import torch
from torch import Tensor

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range
ATTEMPTS = 10  # RandomResizedCrop.get_params: boxes tried before the centre-crop fallback


def crop_boxes(
    low: Tensor,
    high: Tensor,
    size: tuple[int, int],
    g: torch.Generator,
    ratio: tuple[float, float] = RATIO,
) -> Tensor:
    """RandomResizedCrop.get_params for M views at once: int64 (M, 4) top, left, h, w.

    low, high: float (M,) area-fraction range per view. torchvision's algorithm: up to 10
    attempts of area ~ U(low, high) H W and log-ratio ~ U(log r0, log r1), w = round(sqrt(area
    ratio)), h = round(sqrt(area / ratio)); the first with 0 < w <= W and 0 < h <= H wins, its
    top-left uniform over the positions that fit; if none does, the centre crop of the whole
    image with the ratio clamped to [r0, r1]. All attempts are drawn for every view (one call)."""
    height, width = size
    m, device = low.shape[0], low.device
    u = torch.rand(m, ATTEMPTS, 2, generator=g, device=device, dtype=torch.float64)
    offsets = torch.rand(m, 2, generator=g, device=device, dtype=torch.float64)
    lo, hi = low.to(torch.float64)[:, None], high.to(torch.float64)[:, None]
    area = (lo + (hi - lo) * u[..., 0]) * (height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.sqrt(area * aspect).round().long()  # round half to even, as Python's round
    h = torch.sqrt(area / aspect).round().long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(1, keepdim=True)  # the first valid attempt
    found = valid.any(1)
    # Fallback: the centre crop, the whole image when its ratio is within range.
    h0, w0 = height, width
    if width / height < min(ratio):
        h0 = round(width / min(ratio))
    elif width / height > max(ratio):
        w0 = round(height * max(ratio))
    h = torch.where(found, h.gather(1, first)[:, 0], h0)
    w = torch.where(found, w.gather(1, first)[:, 0], w0)
    # torch.randint(0, n + 1) as floor(U (n + 1)), kept below n + 1 against float rounding.
    span = torch.stack([height - h, width - w], 1)
    corner = (offsets * (span + 1)).floor().long().minimum(span)
    fallback = torch.tensor([(height - h0) // 2, (width - w0) // 2], device=device)
    corner = torch.where(found[:, None], corner, fallback)
    return torch.stack([corner[:, 0], corner[:, 1], h, w], 1)
