"""headsweep.views: every batched op against torchvision.transforms.functional applied per
sample, the geometry against explicit per-sample crops, the digit composition and p_drop
semantics, randomness (per sample, per seed) and the public entry points."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from headsweep import views as V
from headsweep.config import AugConfig, DataConfig
from headsweep.data.base import Split

ATOL = 1e-5  # float32 rounding: the closed forms differ from torchvision's only in op order
CPU = torch.device("cpu")


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


# --------------------------------------------------------------------------- colour ops


@pytest.mark.parametrize(
    ("op", "reference", "low", "high"),
    [
        (V.brightness_, TF.adjust_brightness, 0.0, 2.0),
        (V.contrast_, TF.adjust_contrast, 0.0, 2.0),
        (V.saturation_, TF.adjust_saturation, 0.0, 2.0),
        (V.hue_, TF.adjust_hue, -0.5, 0.5),
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
    torch.testing.assert_close(V.hue_(x.clone(), torch.zeros(len(x))), x, atol=ATOL, rtol=0)
    half = V.hue_(V.hue_(x.clone(), torch.full((len(x),), 0.5)), torch.full((len(x),), 0.5))
    torch.testing.assert_close(half, x, atol=ATOL, rtol=0)


def test_grayscale_matches_torchvision() -> None:
    x = images()
    torch.testing.assert_close(V.grayscale(x), TF.rgb_to_grayscale(x), atol=ATOL, rtol=0)


def test_jitter_chain_matches_torchvision_in_fixed_order() -> None:
    x = images()
    g = torch.Generator().manual_seed(1)
    lows, highs = torch.tensor(V.factor_ranges((0.4, 0.4, 0.4, 0.1))).T
    factors = torch.rand(len(x), 4, generator=g) * (highs - lows) + lows
    expected = x.clone()
    for i in range(len(x)):
        b, c, s, h = factors[i].tolist()
        y = TF.adjust_brightness(x[i], b)
        y = TF.adjust_contrast(y, c)
        y = TF.adjust_saturation(y, s)
        expected[i] = TF.adjust_hue(y, h)
    got = V.jitter_(x.clone(), factors, (0.4, 0.4, 0.4, 0.1))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_jitter_skips_ops_of_zero_strength() -> None:
    x = images()
    factors = torch.tensor([[2.0, 2.0, 2.0, 0.3]]).repeat(len(x), 1)
    assert torch.equal(V.jitter_(x.clone(), factors, (0.0, 0.0, 0.0, 0.0)), x)
    only_hue = V.jitter_(x.clone(), factors, (0.0, 0.0, 0.0, 0.1))
    torch.testing.assert_close(only_hue, V.hue_(x.clone(), factors[:, 3]), atol=0, rtol=0)


def test_gray_normalize_matches_grayscale_then_normalize() -> None:
    x = images()
    gray = torch.arange(len(x)) % 3 == 0
    expected = torch.stack(
        [
            TF.normalize(TF.rgb_to_grayscale(x[i], 3) if gray[i] else x[i], V.MEAN, V.STD)
            for i in range(len(x))
        ]
    )
    torch.testing.assert_close(V.gray_normalize_(x.clone(), gray), expected, atol=ATOL, rtol=0)
    plain = TF.normalize(x, V.MEAN, V.STD)
    torch.testing.assert_close(V.gray_normalize_(x.clone(), None), plain, atol=ATOL, rtol=0)


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
    got = V.crop_flip(x, source, dy, dx, flip, pad)
    assert got.dtype == dtype and got.shape == (m, 4, 6, 7)
    assert torch.equal(got, explicit_crop_flip(x, source, dy, dx, flip, pad))


def test_centred_crop_is_identity_and_flip_mirrors() -> None:
    x, _ = uint8_batch(6)
    idx = torch.arange(6)
    centre = torch.full((6,), 4)
    assert torch.equal(V.crop_flip(x, idx, centre, centre, None, 4), x)
    flipped = V.crop_flip(x, idx, centre, centre, torch.ones(6, dtype=torch.bool), 4)
    assert torch.equal(flipped, x.flip(-1))


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
AUG = AugConfig(p_drop=0.5, flip=0.5, crop_pad=2, jitter_p=0.5, gray_p=0.5)


def reference_views(objects, digits, p: V.ViewParams, aug: AugConfig, data: DataConfig):
    """The recipe per view with torchvision's functional ops, from the same parameters."""
    out = []
    for j in range(len(p.source)):
        i = int(p.source[j])
        x = V.compose(
            objects[i : i + 1], digits[i : i + 1], p.keep[j : j + 1], data.strength, data.soft_mask
        )
        pad, (h, w) = aug.crop_pad, x.shape[-2:]
        dy, dx = int(p.dy[j]), int(p.dx[j])
        x = F.pad(x, (pad,) * 4)[0, :, dy : dy + h, dx : dx + w]
        if p.flip[j]:
            x = TF.hflip(x)
        if p.jitter[j]:
            b, c, s, hue = p.factors[j].tolist()
            x = TF.adjust_brightness(x, b)
            x = TF.adjust_contrast(x, c)
            x = TF.adjust_saturation(x, s)
            x = TF.adjust_hue(x, hue)
        if p.gray[j]:
            x = TF.rgb_to_grayscale(x, 3)
        out.append(TF.normalize(x, V.MEAN, V.STD))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [3, 128])
@pytest.mark.parametrize("soft", [True, False])
def test_render_matches_torchvision_recipe_per_view(chunk: int, soft: bool) -> None:
    objects, digits = uint8_batch(20)
    data = DataConfig(strength=0.7, soft_mask=soft)
    p = V.draw(20, AUG, torch.Generator().manual_seed(3), CPU)
    for flag in (p.keep, p.flip, p.jitter, p.gray):  # the draw mixes both branches of each op
        assert 0 < flag.sum() < len(flag)
    got = V.render(objects, digits, p, AUG, data, chunk=chunk)
    expected = reference_views(objects, digits, p, AUG, data)
    torch.testing.assert_close(got, expected, atol=4 * ATOL, rtol=0)  # 4: 1 / std


def test_render_without_overlay_and_without_augmentation() -> None:
    objects, _ = uint8_batch(7)
    off = AugConfig(flip=0.0, crop_pad=0, jitter_p=0.0, gray_p=0.0)
    p = V.draw(7, off, torch.Generator().manual_seed(0), CPU)
    got = V.render(objects, None, p, off, DATA)
    clean = V.normalize(objects.float() / 255)
    torch.testing.assert_close(got, torch.cat([clean, clean]), atol=ATOL, rtol=0)


def test_draw_ranges_and_frequencies() -> None:
    n = 20_000
    aug = AugConfig(p_drop=0.3, flip=0.5, crop_pad=4, jitter_p=0.8, gray_p=0.2)
    p = V.draw(n, aug, torch.Generator().manual_seed(0), CPU)
    m = 2 * n
    assert torch.equal(p.source, torch.arange(n).repeat(2))
    for flag, rate in ((p.flip, 0.5), (p.jitter, 0.8), (p.gray, 0.2)):
        assert flag.shape == (m,)
        assert abs(flag.float().mean().item() - rate) < 0.01
    for offset in (p.dy, p.dx):  # uniform over 0..2 pad, like RandomCrop
        counts = torch.bincount(offset, minlength=9).float() / m
        assert counts.shape == (9,) and (counts - 1 / 9).abs().max() < 0.01
    jittered = p.factors[p.jitter]
    for column, (low, high) in enumerate(V.factor_ranges(aug.jitter)):
        values = jittered[:, column]
        assert values.min() >= low and values.max() <= high
        assert values.min() < low + 0.01 and values.max() > high - 0.01
    assert torch.equal(
        p.factors[~p.jitter], torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(int((~p.jitter).sum()), 4)
    )


def test_parameters_differ_across_samples() -> None:
    """Identical inputs get different views: the randomness is per sample, not per batch."""
    objects, digits = uint8_batch(1, size=16)
    batch = Split(objects.repeat(64, 1, 1, 1), {}, digits.repeat(64, 1, 1, 1))
    v1, v2 = V.two_views(batch, AugConfig(crop_pad=4), DATA, torch.Generator().manual_seed(0))
    views = torch.cat([v1, v2]).flatten(1)
    assert torch.unique(views, dim=0).shape[0] > 120
    p = V.draw(64, AugConfig(crop_pad=4), torch.Generator().manual_seed(0), CPU)
    assert torch.unique(p.factors[p.jitter], dim=0).shape[0] == int(p.jitter.sum())
    assert torch.unique(torch.stack([p.dy, p.dx]), dim=1).shape[1] > 40


def test_two_views_deterministic_per_seed() -> None:
    objects, digits = uint8_batch(16)
    batch = Split(objects, {}, digits)
    aug = AugConfig(p_drop=0.5, crop_pad=2)

    def views(seed: int) -> torch.Tensor:
        return torch.cat(V.two_views(batch, aug, DATA, torch.Generator().manual_seed(seed)))

    assert torch.equal(views(0), views(0))
    assert not torch.allclose(views(0), views(1))


def test_two_views_p_drop_one_drops_the_digit_in_exactly_one_view() -> None:
    objects, digits = uint8_batch(32)
    batch = Split(objects, {}, digits)
    aug = AugConfig(p_drop=1.0, flip=0.0, crop_pad=0, jitter_p=0.0, gray_p=0.0)
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


def test_two_views_output_contract() -> None:
    objects, digits = uint8_batch(10, size=32)
    batch = Split(objects, {}, digits)
    v1, v2 = V.two_views(batch, AugConfig(crop_pad=4), DATA, torch.Generator().manual_seed(0))
    for v in (v1, v2):
        assert v.shape == (10, 3, 32, 32)
        assert v.dtype == torch.float32 and v.device == objects.device
        assert v.is_contiguous() and torch.isfinite(v).all()
    clean = V.clean_view(batch, DATA, torch.Generator())
    assert clean.shape == (10, 3, 32, 32) and clean.dtype == torch.float32
    expected = V.normalize(V.compose(objects, digits, None, DATA.strength, DATA.soft_mask))
    torch.testing.assert_close(clean, expected)


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
