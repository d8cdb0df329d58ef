"""Offline stand-in v2 for MNIST-on-CIFAR-10 ([X] Fig. 3; docs/science.md §4.2, §9): objects live
in texture *structure*, never in colour statistics.

v1 (`digits_on_texture`) gave every class its own palette, so mean RGB alone predicted the object
at 0.75. Here 20 object classes are 5 pattern geometries (`coarse`) x 4 spatial frequencies
(the fine level), and every image draws its palette (a light and a dark colour, in random order)
from one pool of 16 shared by all classes, independent of the label:

    coarse 0 gratings      straight stripes
    coarse 1 rings         concentric circles around a random centre inside the image
    coarse 2 checkers      product of two orthogonal sinusoids
    coarse 3 zigzags       stripes bent into chevrons with 45-degree arms
    coarse 4 blobs         isotropic band-pass noise around the frequency

Frequencies: 2.5, 3.5, 5 and 7 cycles per 32 px (x1.4 apart), each jittered by a factor
exp(0.08 N(0, 1)). Nuisances drawn per image: phase, ring centre, and an orientation of 0 or 90
degrees (+ N(0, 0.05 rad)); both orientations map to themselves under a horizontal flip (a view
augmentation), so flips never change a class. (Uniform orientations made the geometry the hard
part: a supervised grid_cnn reached 0.44 object test accuracy in 88 steps with uniform angles,
0.51 with four, 0.77-0.81 with two.) Every pattern map is rank-transformed per image to a
uniform marginal on [0, 1] before the palette is applied, so the per-image distribution of pixel
values (hence mean and std of R, G, B) is the same for every class: only the arrangement of the
pixels differs (tests/test_data_v2.py checks that a colour-statistics classifier sits at
chance). Per image: a contrast factor in CONTRAST pulls both colours toward their mean, colours
are jittered by N(0, 0.04), and pixel noise N(0, 0.05) is added.

Texture contrast sets how strongly the textures compete with the digit for the encoder's
features (in SimCLR with no head and p_drop 0 the digit probe fell as training learnt the
textures at full contrast): CONTRAST = (0.4, 0.8) is the measured middle (grid_cnn, 88 steps,
no head: digit 0.64, object 0.25; at (0.55, 1) 0.57 and 0.41; at (0.3, 0.6) 0.76 and 0.20).
`data.texture_contrast` overrides it per experiment: the digit experiments' cpu profiles use
(0.3, 0.6), since at (0.4, 0.8) their no-head control sat at the calibration floor (0.598).

Targets: `object` (20 classes = coarse * 4 + frequency level), `coarse` (5 geometries), `digit`
(scikit-learn's 8x8 handwritten digits resized to data.digit_size and centred, stored as a
separate layer and composed per view by headsweep.views exactly as for `digits_on_texture`;
train and test draw from disjoint digit images). Classes are exactly balanced (counts differ by at
most one) and the dataset is a deterministic function of data.seed.
"""

from __future__ import annotations

import colorsys
import math

import torch
from torch import Tensor

from headsweep.config import DataConfig
from headsweep.data.base import Dataset, Split, pair_at_random, place_digits
from headsweep.data.digits_on_texture import FULL_TEST, FULL_TRAIN, digit_pools

COARSE = ("gratings", "rings", "checkers", "zigzags", "blobs")
LEVELS = (2.5, 3.5, 5.0, 7.0)  # cycles per 32 px, one per fine level
OBJECTS = len(COARSE) * len(LEVELS)
FREQ_JITTER = 0.08  # sd of the log-frequency jitter
CONTRAST = (0.4, 0.8)
COLOUR_JITTER = 0.04
PIXEL_NOISE = 0.05
ZIGZAG = 2 * math.pi  # phase swing of the zigzag (2 pi = one stripe period)
BLOB_BAND = 0.15  # sd of the blobs' band-pass, relative to the frequency
ORIENTATIONS: tuple[float, ...] = (0.0, math.pi / 2)  # radians; () = uniform in [0, pi)
ORIENT_JITTER = 0.05  # sd in radians around a discrete orientation
# Per-channel mean and std of the composed images (digit at strength 1, soft mask), measured on
# 10,000 training images of seed 0; the views normalise with them.
TEXTURES_V2_STATS = ((0.463, 0.469, 0.469), (0.143, 0.137, 0.144))


def _palettes() -> Tensor:
    """The shared pool: 16 (light, dark) colour pairs, float (16, 2, 3) in [0, 1]. Hues spread
    round the circle; the dark colour sits a third to two thirds of a turn away."""
    pairs = []
    for i in range(16):
        hue = i / 16
        light = colorsys.hsv_to_rgb(hue, 0.35 + 0.3 * (i % 3) / 2, 0.9 - 0.05 * (i % 2))
        dark = colorsys.hsv_to_rgb((hue + 1 / 3 + (i % 4) / 12) % 1, 0.6, 0.3 + 0.05 * (i % 3))
        pairs.append([light, dark])
    return torch.tensor(pairs, dtype=torch.float32)


PALETTES = _palettes()


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _col(v: Tensor) -> Tensor:
    return v[:, None, None]


def _rotated(n: int, size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Pixel coordinates in units of the image width, rotated by a uniform angle per image:
    (u, v), each float (n, size, size)."""
    coords = torch.arange(size, dtype=torch.float32) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    if ORIENTATIONS:
        choice = torch.randint(len(ORIENTATIONS), (n,), generator=g)
        angle = torch.tensor(ORIENTATIONS)[choice] + ORIENT_JITTER * torch.randn(n, generator=g)
    else:
        angle = _uniform(n, 0.0, math.pi, g)
    c, s = _col(angle.cos()), _col(angle.sin())
    return x * c + y * s, -x * s + y * c


def _phase(n: int, g: torch.Generator) -> Tensor:
    return _col(_uniform(n, 0.0, 2 * math.pi, g))


def _gratings(f: Tensor, size: int, g: torch.Generator) -> Tensor:
    u, _ = _rotated(f.shape[0], size, g)
    return torch.sin(2 * math.pi * _col(f) * u + _phase(f.shape[0], g))


def _rings(f: Tensor, size: int, g: torch.Generator) -> Tensor:
    n = f.shape[0]
    coords = torch.arange(size, dtype=torch.float32) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    cy, cx = _col(_uniform(n, 0.2, 0.8, g)), _col(_uniform(n, 0.2, 0.8, g))
    r = ((x - cx) ** 2 + (y - cy) ** 2).sqrt()
    return torch.sin(2 * math.pi * _col(f) * r + _phase(n, g))


def _checkers(f: Tensor, size: int, g: torch.Generator) -> Tensor:
    n = f.shape[0]
    u, v = _rotated(n, size, g)
    k = 2 * math.pi * _col(f)
    return torch.sin(k * u + _phase(n, g)) * torch.sin(k * v + _phase(n, g))


def _zigzags(f: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Stripes along u displaced by a triangle wave of v: period 2/f, amplitude 1/(2f), so the
    arms run at 45 degrees."""
    n = f.shape[0]
    u, v = _rotated(n, size, g)
    t = v * _col(f) / 2 + _col(_uniform(n, 0.0, 1.0, g))
    triangle = (t - t.floor() - 0.5).abs() * 2 - 0.5  # in [-0.5, 0.5], period 1 in t
    return torch.sin(2 * math.pi * _col(f) * u + ZIGZAG * triangle + _phase(n, g))


def _blobs(f: Tensor, size: int, g: torch.Generator) -> Tensor:
    """White noise band-passed to a ring of radius f cycles per image (Gaussian in |k|,
    width 0.15 f)."""
    n = f.shape[0]
    noise = torch.randn(n, size, size, generator=g)
    k = torch.fft.fftfreq(size) * size  # cycles per image
    radius = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    gain = torch.exp(-0.5 * ((radius - _col(f)) / (BLOB_BAND * _col(f))) ** 2)
    return torch.fft.ifft2(torch.fft.fft2(noise) * gain).real


_PATTERNS = (_gratings, _rings, _checkers, _zigzags, _blobs)


def _rank_uniform(w: Tensor) -> Tensor:
    """Per image, replace each value by its rank mapped to [0, 1]: every image gets the same
    (uniform) marginal, whatever the pattern."""
    n = w.shape[0]
    flat = w.reshape(n, -1)
    order = flat.argsort(dim=1)
    ranks = torch.empty_like(flat)
    steps = torch.linspace(0, 1, flat.shape[1]).expand(n, -1)
    ranks.scatter_(1, order, steps)
    return ranks.view_as(w)


def textures(
    objects: Tensor,
    g: torch.Generator,
    size: int = 32,
    contrast_range: tuple[float, float] = CONTRAST,
) -> Tensor:
    """int64 (N,) object classes in [0, 20) -> uint8 (N, 3, size, size) textures."""
    n = objects.shape[0]
    coarse, level = objects // len(LEVELS), objects % len(LEVELS)
    f = torch.tensor(LEVELS)[level] * torch.exp(FREQ_JITTER * torch.randn(n, generator=g))
    f = f * (size / 32)  # LEVELS are per 32 px
    wave = torch.empty(n, size, size)
    for c, pattern in enumerate(_PATTERNS):
        rows = (coarse == c).nonzero().squeeze(1)
        if rows.numel():
            wave[rows] = pattern(f[rows], size, g)
    wave = _rank_uniform(wave)
    palette = PALETTES[torch.randint(PALETTES.shape[0], (n,), generator=g)]
    swap = torch.rand(n, generator=g) < 0.5
    palette = torch.where(swap[:, None, None], palette.flip(1), palette)
    palette = palette + COLOUR_JITTER * torch.randn(n, 2, 3, generator=g)
    # Contrast: both colours pulled toward their mean by the same factor.
    mean = palette.mean(1, keepdim=True)
    contrast = _uniform(n, *contrast_range, g)[:, None, None]
    a, b = (mean + contrast * (palette - mean)).unbind(1)  # (n, 3) each
    image = b[:, :, None, None] + (a - b)[:, :, None, None] * wave[:, None]
    image = image + PIXEL_NOISE * torch.randn(image.shape, generator=g)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def balanced_labels(n: int, classes: int, g: torch.Generator) -> Tensor:
    """n labels, each class n // classes or one more times, in random order."""
    return (torch.arange(n) % classes)[torch.randperm(n, generator=g)]


def _split(
    n: int,
    digit_pool: Tensor,
    digit_labels: Tensor,
    size: int,
    g: torch.Generator,
    contrast: tuple[float, float] = CONTRAST,
) -> Split:
    objects = balanced_labels(n, OBJECTS, g)
    # Chunks of 1,024 keep the temporaries in cache (1.4x faster than one pass over 5,000).
    images = torch.cat([textures(chunk, g, 32, contrast) for chunk in objects.split(1024)])
    pairing = pair_at_random(n, digit_pool.shape[0], g)
    overlay = place_digits(digit_pool, size)[pairing]
    labels = {
        "object": objects,
        "coarse": objects // len(LEVELS),
        "digit": digit_labels[pairing],
    }
    return Split(images, labels, overlay)


def textures_v2(cfg: DataConfig) -> Dataset:
    g = torch.Generator().manual_seed(cfg.seed)
    train_digits, test_digits = digit_pools(g)
    contrast = (float(cfg.texture_contrast[0]), float(cfg.texture_contrast[1]))
    train = _split(cfg.n_train or FULL_TRAIN, *train_digits, cfg.digit_size, g, contrast)
    test = _split(cfg.n_test or FULL_TEST, *test_digits, cfg.digit_size, g, contrast)
    classes = {"object": OBJECTS, "coarse": len(COARSE), "digit": 10}
    return Dataset("textures_v2", "image", train, test, classes)
