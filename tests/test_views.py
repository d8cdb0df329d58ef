"""headsweep.views and headsweep.view_ops: every batched op against
torchvision.transforms.v2.functional applied per sample on the same parameters, the crop-box
distribution against torchvision's RandomResizedCrop.get_params, the whole per-view pipeline
against a per-sample torchvision reference, the digit composition and p_drop semantics,
per-view (asymmetric) recipes, randomness (per sample, per seed) and the public entry points."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from headsweep import crop_boxes as crop_boxes_module
from headsweep import view_ops as O
from headsweep import views as V
from headsweep.config import AugConfig, DataConfig, TrialConfig, ViewConfig
from headsweep.data import STATS
from headsweep.data.base import Split
from headsweep.view_describe import describe_view

ATOL = 1e-5  # float32 rounding: the closed forms differ from torchvision's only in op order
# Resampling matrices against resized_crop (float32), max abs error measured over 400 random
# boxes: 0 for 32x32 -> 32x32 (the views' case: same weights, same order of operations),
# 7.9e-7 for 12x9 and 1.3e-6 for downsampling 40x36 -> 13x17 (the weights' float rounding).
RESIZE_ATOL = 4e-6
CPU = torch.device("cpu")
OFF = ViewConfig(color_jitter_prob=0.0, gray_scale_prob=0.0, horizontal_flip_prob=0.0)


def images(n: int = 24, size: int = 8, seed: int = 0) -> torch.Tensor:
    """float (n, 3, size, size) in [0, 1] with the hard cases of HSV: grey pixels (chroma 0),
    black, white, saturated primaries, ties between the largest channels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0] = 0.5  # uniform grey image: contrast mean = pixel
    x[1, :, :2] = 0.0
    x[1, :, 2:4] = 1.0
    x[2, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    x[2, :, 0, 1] = torch.tensor([0.0, 1.0, 0.0])
    x[2, :, 0, 2] = torch.tensor([0.0, 0.0, 1.0])
    x[2, :, 1, :] = torch.tensor([0.7, 0.7, 0.2]).view(3, 1)  # r == g max
    x[2, :, 2, :] = torch.tensor([0.2, 0.7, 0.7]).view(3, 1)  # g == b max
    x[2, :, 3, :] = torch.tensor([0.7, 0.2, 0.7]).view(3, 1)  # r == b max
    x[3] = (x[3] * 4).round() / 4  # many exact ties
    return x


def uint8_batch(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    objects = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    digits = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    digits[digits < 128] = 0  # a digit layer is mostly background
    return objects, digits


def per_sample(fn, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(x[i], float(factors[i])) for i in range(len(x))])


def recipe(name: str, **aug) -> AugConfig:
    return TrialConfig.from_dict({"aug": {"recipe": name, **aug}}).aug


# --------------------------------------------------------------------------- colour ops


@pytest.mark.parametrize(
    ("op", "reference", "low", "high"),
    [
        (O.brightness_, TF.adjust_brightness, 0.0, 2.0),
        (O.contrast_, TF.adjust_contrast, 0.0, 2.0),
        (O.saturation_, TF.adjust_saturation, 0.0, 2.0),
        (O.hue_, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_op_matches_torchvision_per_sample(op, reference, low, high) -> None:
    x = images()
    factors = torch.linspace(low, high, len(x))
    expected = per_sample(reference, x, factors)
    got = op(x.clone(), factors)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_hue_zero_shift_is_identity_and_full_turn_wraps() -> None:
    x = images()
    torch.testing.assert_close(O.hue_(x.clone(), torch.zeros(len(x))), x, atol=ATOL, rtol=0)
    half = O.hue_(O.hue_(x.clone(), torch.full((len(x),), 0.5)), torch.full((len(x),), 0.5))
    torch.testing.assert_close(half, x, atol=ATOL, rtol=0)


def test_grayscale_matches_torchvision() -> None:
    x = images()
    torch.testing.assert_close(O.grayscale(x), TF.rgb_to_grayscale(x), atol=ATOL, rtol=0)
    gray = torch.arange(len(x)) % 3 == 0
    expected = torch.stack(
        [TF.rgb_to_grayscale(x[i], 3) if gray[i] else x[i] for i in range(len(x))]
    )
    torch.testing.assert_close(O.gray_(x.clone(), gray), expected, atol=ATOL, rtol=0)


def test_jitter_chain_matches_torchvision_in_fixed_order() -> None:
    x = images()
    g = torch.Generator().manual_seed(1)
    lows, highs = torch.tensor(V.factor_ranges((0.8, 0.8, 0.8, 0.2))).T
    factors = torch.rand(len(x), 4, generator=g) * (highs - lows) + lows
    expected = x.clone()
    for i in range(len(x)):
        b, c, s, h = factors[i].tolist()
        y = TF.adjust_brightness(x[i], b)
        y = TF.adjust_contrast(y, c)
        y = TF.adjust_saturation(y, s)
        expected[i] = TF.adjust_hue(y, h)
    got = O.jitter_(x.clone(), factors, (True, True, True, True))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_jitter_skips_ops_that_are_off() -> None:
    x = images()
    factors = torch.tensor([[2.0, 2.0, 2.0, 0.3]]).repeat(len(x), 1)
    assert torch.equal(O.jitter_(x.clone(), factors, (False,) * 4), x)
    only_hue = O.jitter_(x.clone(), factors, (False, False, False, True))
    torch.testing.assert_close(only_hue, O.hue_(x.clone(), factors[:, 3]), atol=0, rtol=0)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_gray_normalize_matches_grayscale_then_normalize(dataset: str) -> None:
    x = images()
    mean, std = STATS[dataset]
    gray = torch.arange(len(x)) % 3 == 0
    expected = torch.stack(
        [
            TF.normalize(TF.rgb_to_grayscale(x[i], 3) if gray[i] else x[i], mean, std)
            for i in range(len(x))
        ]
    )
    got = O.gray_normalize_(x.clone(), gray, mean, std)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    plain = TF.normalize(x, mean, std)
    got = O.gray_normalize_(x.clone(), None, mean, std)
    torch.testing.assert_close(got, plain, atol=ATOL, rtol=0)
    torch.testing.assert_close(V.normalize(x, dataset), plain, atol=ATOL, rtol=0)


def test_normalize_uses_the_dataset_statistics_with_a_cifar10_fallback() -> None:
    x = images()
    assert V.stats(DataConfig(name="cifar100")) == STATS["cifar100"]
    assert V.stats("digits_on_texture") == STATS["cifar10"] == (V.MEAN, V.STD)
    assert V.stats("no_such_dataset") == STATS["cifar10"]
    assert not torch.allclose(V.normalize(x, "cifar100"), V.normalize(x, "cifar10"))


def test_solarize_matches_torchvision_on_the_selected_views() -> None:
    x = images()
    x[4, 0, 0, :3] = torch.tensor([128 / 255, 127.9 / 255, 1.0])  # the threshold is >=
    rows = torch.tensor([1, 2, 4, 7, 20])
    expected = x.clone()
    for i in rows.tolist():
        expected[i] = TF.solarize(x[i], 128 / 255)
    torch.testing.assert_close(O.solarize_(x.clone(), rows), expected, atol=0, rtol=0)


# --------------------------------------------------------------------------- geometry


def explicit_crop_flip(x, source, dy, dx, flip, pad):
    padded = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    out = []
    for j in range(len(source)):
        crop = padded[source[j], :, dy[j] : dy[j] + h, dx[j] : dx[j] + w]
        out.append(crop.flip(-1) if flip is not None and flip[j] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("pad", [0, 1, 4])
@pytest.mark.parametrize("with_flip", [False, True])
def test_crop_flip_is_a_per_sample_crop_of_the_zero_padded_image(dtype, pad, with_flip) -> None:
    g = torch.Generator().manual_seed(pad)
    x = (torch.rand(5, 4, 6, 7, generator=g) * 255).to(dtype)
    m = 23
    source = torch.randint(0, 5, (m,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (m,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (m,), generator=g)
    dy[:2], dx[:2] = 0, 2 * pad  # the extreme offsets
    dy[2:4], dx[2:4] = 2 * pad, 0
    flip = (torch.rand(m, generator=g) < 0.5) if with_flip else None
    got = O.crop_flip(x, source, dy, dx, flip, pad)
    assert got.dtype == dtype and got.shape == (m, 4, 6, 7)
    assert torch.equal(got, explicit_crop_flip(x, source, dy, dx, flip, pad))


def test_centred_crop_is_identity_and_flip_mirrors() -> None:
    x, _ = uint8_batch(6)
    idx = torch.arange(6)
    centre = torch.full((6,), 4)
    assert torch.equal(O.crop_flip(x, idx, centre, centre, None, 4), x)
    flipped = O.crop_flip(x, idx, centre, centre, torch.ones(6, dtype=torch.bool), 4)
    assert torch.equal(flipped, x.flip(-1))


def random_boxes(m: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(m, 4) top, left, h, w inside the image, with the extreme cases first."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(1, height + 1, (m,), generator=g)
    w = torch.randint(1, width + 1, (m,), generator=g)
    h[:3], w[:3] = torch.tensor([1, height, 2]), torch.tensor([1, width, width])
    top = (torch.rand(m, generator=g) * (height - h + 1)).long()
    left = (torch.rand(m, generator=g) * (width - w + 1)).long()
    top[1], left[1] = 0, 0
    return torch.stack([top, left, h, w], 1)


@pytest.mark.parametrize(
    ("size", "out"), [((32, 32), (32, 32)), ((12, 9), (12, 9)), ((40, 36), (13, 17))]
)
def test_resample_matches_resized_crop_bicubic_antialias(size, out) -> None:
    """Separable per-sample matrices = torchvision's resized_crop (bicubic, antialias) on
    float tensors, up- and downsampling, flipped or not, bicubic overshoot included."""
    m = 40
    x = torch.rand(m, 3, *size, generator=torch.Generator().manual_seed(0))
    box = random_boxes(m, *size, seed=1)
    flip = torch.arange(m) % 2 == 1
    rows = O.resample_matrices(box[:, 0], box[:, 2], size[0], out[0])
    cols = O.resample_matrices(box[:, 1], box[:, 3], size[1], out[1], flip)
    got = O.separable(x, rows, cols)
    expected = []
    for j in range(m):
        top, left, h, w = box[j].tolist()
        y = TF.resized_crop(x[j], top, left, h, w, list(out), InterpolationMode.BICUBIC, True)
        expected.append(TF.hflip(y) if flip[j] else y)
    expected = torch.stack(expected)
    assert expected.min() < 0 or expected.max() > 1  # the kernel overshoots: not clamped here
    torch.testing.assert_close(got, expected, atol=RESIZE_ATOL, rtol=0)


def test_resample_rows_sum_to_one_and_have_four_taps_when_upsampling() -> None:
    box = random_boxes(64, 32, 32, seed=2)
    a = O.resample_matrices(box[:, 0], box[:, 2], 32, 32)
    torch.testing.assert_close(a.sum(-1), torch.ones(64, 32), atol=1e-6, rtol=0)
    assert ((a != 0).sum(-1) <= 4).all()
    inside = torch.arange(32)[None, None, :]
    window = (inside >= box[:, 0, None, None]) & (inside < (box[:, 0] + box[:, 2])[:, None, None])
    assert (a[~window.expand_as(a)] == 0).all()  # no tap outside the box


def test_resample_of_a_shifted_full_window_is_the_zero_padded_shift() -> None:
    x = torch.rand(9, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pad = 3
    dy = torch.arange(9) % (2 * pad + 1)
    dx = torch.arange(9).flip(0) % (2 * pad + 1)
    flip = torch.arange(9) % 3 == 0
    full = torch.full((9,), 8)
    rows = O.resample_matrices(dy - pad, full, 8, 8)
    cols = O.resample_matrices(dx - pad, full, 8, 8, flip)
    expected = explicit_crop_flip(x, torch.arange(9), dy, dx, flip, pad)
    assert torch.equal(O.separable(x, rows, cols), expected)


@pytest.mark.parametrize("size", [8, 32])
def test_window_table_equals_the_computed_matrices(size: int) -> None:
    box = random_boxes(200, size, size, seed=3)
    shift = torch.arange(-O.MAX_SHIFT, O.MAX_SHIFT + 1)
    start = torch.cat([box[:, 0], shift])
    length = torch.cat([box[:, 2], torch.full_like(shift, size)])
    flip = torch.arange(len(start)) % 2 == 0
    for f in (None, flip):
        expected = O.resample_matrices(start, length, size, size, f)
        assert torch.equal(O.window_matrices(start, length, size, size, f), expected)


@pytest.mark.parametrize("size", [8, 32])
def test_blur_matches_torchvision_gaussian_blur(size: int) -> None:
    x = torch.rand(20, 3, size, size, generator=torch.Generator().manual_seed(0))
    sigma = torch.linspace(*V.SIGMA, len(x))
    got = O.separable(x, O.blur_matrices(sigma, size), O.blur_matrices(sigma, size))
    k = O.BLUR_KERNEL
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2) for i in range(len(x))]
    )
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_blur_kernel_holds_sigma_two() -> None:
    kernel = O.gaussian_kernels(torch.tensor([2.0]), O.BLUR_KERNEL)
    untruncated = O.gaussian_kernels(torch.tensor([2.0]), 41)[0, 14:27]
    assert abs(untruncated.sum().item() - 1) < 3e-3  # radius 6 = 3 sigma keeps > 99.7%
    torch.testing.assert_close(kernel[0], untruncated / untruncated.sum())


# --------------------------------------------------------------------------- crop boxes


def torchvision_boxes(n: int, scale: tuple[float, float], size=(32, 32)) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        img = torch.empty(3, *size)
        rows = [T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)]
    return torch.tensor(rows)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.2, 1.0)])
def test_crop_box_distribution_matches_get_params(scale) -> None:
    stats = pytest.importorskip("scipy.stats")
    n = 20_000
    ours = V.crop_boxes(
        torch.full((n,), scale[0]), torch.full((n,), scale[1]), (32, 32), torch.Generator()
    )
    theirs = torchvision_boxes(n, scale)
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (h >= 1).all() and (w >= 1).all()
        assert (top + h <= 32).all() and (left + w <= 32).all() and (top >= 0).all()
    features = {
        "area fraction": lambda b: (b[:, 2] * b[:, 3]).double() / 1024,
        "aspect ratio": lambda b: b[:, 3].double() / b[:, 2].double(),
        "top": lambda b: b[:, 0].double(),
        "left": lambda b: b[:, 1].double(),
    }
    for name, feature in features.items():
        p = stats.ks_2samp(feature(ours).numpy(), feature(theirs).numpy()).pvalue
        assert p > 0.01, f"{name}: KS p = {p:.3g}"
    area = (ours[:, 2] * ours[:, 3]).double() / 1024
    assert area.min() < scale[0] + 0.02 and area.max() == 1.0


def test_crop_box_fallback_is_torchvision_centre_crop() -> None:
    """No attempt fits a wide image at a large scale: centre crop with the ratio clamped."""
    for size in ((8, 200), (200, 8)):
        expected = torchvision_boxes(1, (0.9, 1.0), size)[0]
        got = V.crop_boxes(torch.full((5,), 0.9), torch.ones(5), size, torch.Generator())
        assert torch.equal(got, expected.expand(5, 4)), (got, expected)


# --------------------------------------------------------------------------- composition


@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_compose_formula(soft: bool, strength: float) -> None:
    objects, digits = uint8_batch(6)
    keep = torch.tensor([True, False, True, True, False, True])
    c, d = objects.float() / 255, digits.float() / 255
    m = d if soft else (d > 0).float()
    w = strength * m * keep.float().view(-1, 1, 1, 1)
    expected = (1 - w) * c + w * d
    got = V.compose(objects, digits, keep, strength, soft)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert torch.equal(got[1], c[1])  # dropped: the object alone
    torch.testing.assert_close(V.compose(objects, None, keep, strength, soft), c)


def test_digit_keep_p_drop_semantics() -> None:
    n = 40_000
    g = torch.Generator().manual_seed(0)
    keep1, keep2 = V.digit_keep(n, 0.4, g, CPU)
    assert not (~keep1 & ~keep2).any()  # never both views dropped
    dropped = ~keep1 | ~keep2
    assert abs(dropped.float().mean().item() - 0.4) < 0.015
    first = (~keep1).sum().item() / dropped.sum().item()
    assert abs(first - 0.5) < 0.02  # which view drops it: 50/50
    k1, k2 = V.digit_keep(1000, 0.0, g, CPU)
    assert k1.all() and k2.all()
    k1, k2 = V.digit_keep(1000, 1.0, g, CPU)
    assert torch.equal(k1, ~k2)  # exactly one dropped, every pair
    assert 0.4 < k1.float().mean().item() < 0.6


# --------------------------------------------------------------------------- full pipeline

DATA = DataConfig(strength=0.7, soft_mask=True)
SHIFT_VIEW = ViewConfig(crop_pad=2, color_jitter_prob=0.5, gray_scale_prob=0.5)
AUG = AugConfig(view1=SHIFT_VIEW, view2=SHIFT_VIEW, p_drop=0.5)
# Every op, asymmetric, and both geometries in one batch: view 1 a resized crop, view 2 a shift.
EVERYTHING = AugConfig(
    view1=ViewConfig(
        crop_min_scale=0.08,
        brightness=0.8,
        contrast=0.8,
        saturation=0.8,
        hue=0.2,
        color_jitter_prob=0.6,
        gray_scale_prob=0.4,
        gaussian_prob=0.5,
        solarization_prob=0.5,
    ),
    view2=ViewConfig(crop_pad=3, saturation=0.0, gaussian_prob=0.5, horizontal_flip_prob=0.3),
    p_drop=0.5,
)


def reference_views(objects, digits, p: V.ViewParams, aug: AugConfig, data: DataConfig):
    """The recipe per view with torchvision.transforms.v2.functional, from the same parameters,
    in docs/science.md §8's order (flip last)."""
    n, (height, width) = len(objects), objects.shape[-2:]
    mean, std = V.stats(data)
    out = []
    for j in range(len(p.source)):
        i, view = int(p.source[j]), aug.views[j // n]
        x = V.compose(
            objects[i : i + 1], digits[i : i + 1], p.keep[j : j + 1], data.strength, data.soft_mask
        )[0]
        if view.resized_crop:
            top, left, h, w = p.box[j].tolist()
            size = [height, width]
            x = TF.resized_crop(x, top, left, h, w, size, InterpolationMode.BICUBIC, True)
            x = x.clamp(0, 1)
        elif view.crop_pad:
            if p.box is not None:  # the shift as a box: (dy - pad, dx - pad, H, W)
                dy, dx = p.box[j, 0] + view.crop_pad, p.box[j, 1] + view.crop_pad
            else:  # offsets relative to the common padding
                dy, dx = p.dy[j] - p.pad + view.crop_pad, p.dx[j] - p.pad + view.crop_pad
            pad = view.crop_pad
            x = F.pad(x, (pad,) * 4)[:, dy : dy + height, dx : dx + width]
        if p.jitter is not None and p.jitter[j]:
            b, c, s, hue = p.factors[j].tolist()
            for on, op, f in zip(
                view.jitter,
                (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue),
                (b, c, s, hue),
                strict=True,
            ):
                if on:
                    x = op(x, f)
        if p.gray is not None and p.gray[j]:
            x = TF.rgb_to_grayscale(x, 3)
        if p.blur is not None and p.blur[j]:
            k = O.BLUR_KERNEL
            x = TF.gaussian_blur(x, [k, k], [float(p.sigma[j])] * 2)
        if p.solarize is not None and p.solarize[j]:
            x = TF.solarize(x, 128 / 255)
        if p.flip is not None and p.flip[j]:
            x = TF.hflip(x)
        out.append(TF.normalize(x, mean, std))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [3, 128])
@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("aug", [AUG, EVERYTHING], ids=["shift", "everything"])
def test_render_matches_torchvision_recipe_per_view(chunk: int, soft: bool, aug) -> None:
    n = 20
    objects, digits = uint8_batch(n, size=16)
    data = DataConfig(name="cifar100", strength=0.7, soft_mask=soft)
    p = V.draw(n, aug, torch.Generator().manual_seed(3), CPU, (16, 16))
    flags = [p.keep, p.flip, p.jitter, p.gray, p.blur, p.solarize]
    for flag in filter(lambda f: f is not None, flags):  # the draw mixes both branches
        assert 0 < flag.sum() < len(flag)
    got = V.render(objects, digits, p, data, chunk=chunk)
    expected = reference_views(objects, digits, p, aug, data)
    torch.testing.assert_close(got, expected, atol=4 * ATOL, rtol=0)  # 4: 1 / std


@pytest.mark.parametrize("name", ["sas_digits", "simclr_cifar", "barlow_cifar", "supcon_cifar"])
def test_render_matches_torchvision_for_each_recipe(name: str) -> None:
    n = 24
    objects, digits = uint8_batch(n, size=32, seed=1)
    aug = recipe(name, p_drop=0.3)
    p = V.draw(n, aug, torch.Generator().manual_seed(0), CPU, (32, 32))
    got = V.render(objects, digits, p, DATA)
    expected = reference_views(objects, digits, p, aug, DATA)
    torch.testing.assert_close(got, expected, atol=4 * ATOL, rtol=0)


def test_ops_no_view_uses_are_not_drawn() -> None:
    p = V.draw(8, recipe("sas_digits"), torch.Generator(), CPU)
    assert p.box is None and p.dy is None and p.blur is None and p.solarize is None
    assert p.jitter_ops == (True, True, True, True) and p.flip is not None
    p = V.draw(8, AugConfig(view1=OFF, view2=OFF), torch.Generator(), CPU)
    assert all(v is None for v in (p.box, p.dy, p.flip, p.jitter, p.gray, p.blur, p.solarize))
    p = V.draw(8, recipe("barlow_cifar"), torch.Generator(), CPU)
    assert p.blur is None and p.jitter_ops == (True, True, True, True)
    assert p.solarize is not None and p.box is not None


def test_render_without_overlay_and_without_augmentation() -> None:
    objects, _ = uint8_batch(7)
    off = AugConfig(view1=OFF, view2=OFF)
    p = V.draw(7, off, torch.Generator().manual_seed(0), CPU, (8, 8))
    got = V.render(objects, None, p, DATA)
    clean = V.normalize(objects.float() / 255)
    torch.testing.assert_close(got, torch.cat([clean, clean]), atol=ATOL, rtol=0)


def test_draw_ranges_and_frequencies_per_view() -> None:
    n = 20_000
    view1 = ViewConfig(crop_pad=4, horizontal_flip_prob=0.5, color_jitter_prob=0.8)
    view2 = ViewConfig(
        crop_pad=1,
        horizontal_flip_prob=0.1,
        color_jitter_prob=0.3,
        gray_scale_prob=0.6,
        gaussian_prob=0.4,
        solarization_prob=0.2,
        brightness=0.0,
        hue=0.3,
    )
    aug = AugConfig(view1=view1, view2=view2, p_drop=0.3)
    p = V.draw(n, aug, torch.Generator().manual_seed(0), CPU)
    assert torch.equal(p.source, torch.arange(n).repeat(2))
    assert p.pad == 4
    for half, view in ((slice(0, n), view1), (slice(n, 2 * n), view2)):
        for flag, rate in (
            (p.flip, view.horizontal_flip_prob),
            (p.jitter, view.color_jitter_prob),
            (p.gray, view.gray_scale_prob),
            (p.blur, view.gaussian_prob),
            (p.solarize, view.solarization_prob),
        ):
            assert abs(flag[half].float().mean().item() - rate) < 0.012
        for offset in (p.dy[half], p.dx[half]):  # uniform over 0..2 pad, like RandomCrop
            local = offset - (p.pad - view.crop_pad)
            counts = torch.bincount(local, minlength=2 * view.crop_pad + 1).float() / n
            assert counts.shape == (2 * view.crop_pad + 1,)
            assert (counts - 1 / (2 * view.crop_pad + 1)).abs().max() < 0.012
        jittered = p.factors[half][p.jitter[half]]
        for column, (low, high) in enumerate(V.factor_ranges(view.jitter)):
            values = jittered[:, column]
            assert values.min() >= low and values.max() <= high
            assert values.min() < low + 0.01 and values.max() > high - 0.01
        skipped = p.factors[half][~p.jitter[half]]
        assert torch.equal(skipped, torch.tensor([V.IDENTITY_FACTORS]).expand_as(skipped))
    sigma = p.sigma[n:][p.blur[n:]]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert sigma.min() < 0.11 and sigma.max() > 1.99


def test_barlow_recipe_is_asymmetric() -> None:
    """barlow_cifar: view 1 is never solarized, view 2 about 20% of the time."""
    aug = recipe("barlow_cifar")
    n = 4000
    p = V.draw(n, aug, torch.Generator().manual_seed(0), CPU)
    assert not p.solarize[:n].any()
    assert abs(p.solarize[n:].float().mean().item() - 0.2) < 0.02
    # In the views themselves: solarizing only ever lowers a bright pixel to <= 1 - 128/255,
    # so with jitter, grayscale and flip off, a view is solarized iff it differs from the
    # same view unsolarized.
    quiet = {"color_jitter_prob": 0.0, "gray_scale_prob": 0.0}
    aug = recipe("barlow_cifar", view1=quiet, view2=quiet)
    objects, digits = uint8_batch(512, size=16, seed=3)
    p = V.draw(512, aug, torch.Generator().manual_seed(1), CPU, (16, 16))
    plain = V.ViewParams(**{**vars(p), "solarize": None})
    changed = V.render(objects, digits, p, DATA) != V.render(objects, digits, plain, DATA)
    changed = changed.flatten(1).any(1)
    assert not changed[:512].any()
    assert torch.equal(changed[512:], p.solarize[512:])
    assert 0.14 < changed[512:].float().mean().item() < 0.26


def test_parameters_differ_across_samples() -> None:
    """Identical inputs get different views: the randomness is per sample, not per batch."""
    objects, digits = uint8_batch(1, size=16)
    batch = Split(objects.repeat(64, 1, 1, 1), {}, digits.repeat(64, 1, 1, 1))
    pad4 = ViewConfig(crop_pad=4)
    for aug in (AugConfig(view1=pad4, view2=pad4), recipe("simclr_cifar")):
        v1, v2 = V.two_views(batch, aug, DATA, torch.Generator().manual_seed(0))
        views = torch.cat([v1, v2]).flatten(1)
        assert torch.unique(views, dim=0).shape[0] > 120
    p = V.draw(64, recipe("simclr_cifar"), torch.Generator().manual_seed(0), CPU)
    assert torch.unique(p.factors[p.jitter], dim=0).shape[0] == int(p.jitter.sum())
    assert torch.unique(p.box, dim=0).shape[0] > 100


@pytest.mark.parametrize("name", ["sas_digits", "simclr_cifar", "barlow_cifar"])
def test_two_views_deterministic_per_seed(name: str) -> None:
    objects, digits = uint8_batch(16, size=32)
    batch = Split(objects, {}, digits)
    aug = recipe(name, p_drop=0.5)

    def views(seed: int) -> torch.Tensor:
        return torch.cat(V.two_views(batch, aug, DATA, torch.Generator().manual_seed(seed)))

    assert torch.equal(views(0), views(0))
    assert not torch.allclose(views(0), views(1))


def test_two_views_p_drop_one_drops_the_digit_in_exactly_one_view() -> None:
    objects, digits = uint8_batch(32)
    batch = Split(objects, {}, digits)
    aug = AugConfig(view1=OFF, view2=OFF, p_drop=1.0)
    v1, v2 = V.two_views(batch, aug, DATA, torch.Generator().manual_seed(0))
    with_digit = V.normalize(V.compose(objects, digits, None, DATA.strength, DATA.soft_mask))
    without = V.normalize(objects.float() / 255)
    has = (digits.flatten(1) > 0).any(1)
    for a, b in ((v1, v2), (v2, v1)):
        dropped = (a - without).flatten(1).abs().amax(1) < ATOL
        kept = (b - with_digit).flatten(1).abs().amax(1) < ATOL
        assert (kept | ~dropped)[has].all()
    first_dropped = (v1 - without).flatten(1).abs().amax(1) < ATOL
    second_dropped = (v2 - without).flatten(1).abs().amax(1) < ATOL
    assert (first_dropped ^ second_dropped)[has].all()


@pytest.mark.parametrize("name", ["sas_digits", "simclr_cifar"])
def test_two_views_output_contract(name: str) -> None:
    objects, digits = uint8_batch(10, size=32)
    batch = Split(objects, {}, digits)
    v1, v2 = V.two_views(batch, recipe(name), DATA, torch.Generator().manual_seed(0))
    for v in (v1, v2):
        assert v.shape == (10, 3, 32, 32)
        assert v.dtype == torch.float32 and v.device == objects.device
        assert v.is_contiguous() and torch.isfinite(v).all()
    data = DataConfig(name="cifar100", strength=0.7)
    clean = V.clean_view(batch, data, torch.Generator())
    assert clean.shape == (10, 3, 32, 32) and clean.dtype == torch.float32
    composed = V.compose(objects, digits, None, data.strength, data.soft_mask)
    torch.testing.assert_close(clean, TF.normalize(composed, *STATS["cifar100"]))


def test_augment_one_view_per_sample_digit_kept() -> None:
    objects, digits = uint8_batch(12, size=32)
    batch = Split(objects, {}, digits)
    linear = ViewConfig(
        crop_min_scale=0.08, color_jitter_prob=0.0, gray_scale_prob=0.0, horizontal_flip_prob=0.5
    )
    out = V.augment(batch, linear, DATA, torch.Generator().manual_seed(0))
    assert out.shape == (12, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, V.augment(batch, linear, DATA, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, V.augment(batch, linear, DATA, torch.Generator().manual_seed(1)))
    # The same draw as two_views' parameters for one view with every digit kept.
    keep = torch.ones(12, dtype=torch.bool)
    p = V._draw_views(12, (linear,), keep, (32, 32), torch.Generator().manual_seed(0), CPU)
    assert p.jitter is None and p.gray is None and p.box is not None
    expected = reference_views(objects, digits, p, AugConfig(view1=linear), DATA)
    torch.testing.assert_close(out, expected, atol=4 * ATOL, rtol=0)
    # A view that does nothing is the clean view (digit kept at strength s).
    clean = V.clean_view(batch, DATA, torch.Generator())
    torch.testing.assert_close(V.augment(batch, OFF, DATA, torch.Generator()), clean)
    with pytest.raises(ValueError, match="image data"):
        V.augment(Split(torch.randn(4, 3), {}), linear, DATA, torch.Generator())


def test_describe_view() -> None:
    simclr = recipe("simclr_cifar").view1
    assert describe_view(simclr) == (
        "RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3), bicubic) -> HorizontalFlip p=0.5"
        " -> ColorJitter(0.8, 0.8, 0.8, 0.2) p=0.8 -> Grayscale p=0.2 -> GaussianBlur(sigma"
        " 0.1-2, kernel 13) p=0.5 -> Normalize(cifar10)"
    )
    barlow = recipe("barlow_cifar")
    assert "Solarize" not in describe_view(barlow.view1)
    assert "Solarize(128/255) p=0.2 -> Normalize(cifar100)" in describe_view(
        barlow.view2, DataConfig(name="cifar100")
    )
    assert describe_view(SHIFT_VIEW).startswith("RandomCrop(padding=2) -> HorizontalFlip")
    assert describe_view(OFF, "digits_on_texture") == "Normalize(digits_on_texture)"


def test_vector_data_delegates_to_feature_views() -> None:
    synthetic = pytest.importorskip("headsweep.data.synthetic")
    data = DataConfig(name="synthetic", dim=12, phi=(1.0, 0.5, 0.25), noise=0.1)
    aug = AugConfig(feature_drop=(0.5, 0.0, 0.2), sign_flip=(1,))
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    got = V.two_views(Split(z, {}), aug, data, torch.Generator().manual_seed(5))
    expected = synthetic.feature_views(
        z,
        data.phi,
        data.dim,
        data.noise,
        aug.feature_drop,
        aug.sign_flip,
        torch.Generator().manual_seed(5),
    )
    for a, b in zip(got, expected, strict=True):
        assert a.shape == (50, 12)
        assert torch.equal(a, b)


def test_sigma_range_and_ratio_constants() -> None:
    assert V.SIGMA == (0.1, 2.0) and crop_boxes_module.ATTEMPTS == 10
    ratio = crop_boxes_module.RATIO
    assert math.isclose(ratio[0], 3 / 4) and math.isclose(ratio[1], 4 / 3)
