"""sweeps/gpu_cost.py: the GPU-scale cost table of REPRODUCTION.md, checked by hand arithmetic."""

from __future__ import annotations

import pytest

from sweeps import gpu_cost
from sweeps.gpu_cost import FORWARD_SHARE, Rates, estimate, estimates, gpu_profiles
from sweeps.overrides import apply_profiles
from sweeps.spec import parse_spec
from sweeps.specfile import read_spec_file

RATES = Rates({256: 1000.0, 512: 2000.0}, 4.0, "test")


def _spec(name: str, profiles: tuple[str, ...] = ()):
    raw = read_spec_file(gpu_cost.REPOSITORY / "sweeps" / f"{name}.yaml")
    return parse_spec(apply_profiles(raw, list(profiles)), {}, cwd=gpu_cost.REPOSITORY)


def test_committed_measurement_is_read():
    rates = Rates.read()
    assert set(rates.views_per_s) == {256, 512}
    assert 10_000 < rates.views_per_s[256] < rates.views_per_s[512]
    assert rates.gflop_per_view == pytest.approx(4.23, abs=0.01)
    assert rates.at(300) == rates.views_per_s[256] and rates.at(1024) == rates.views_per_s[512]


def test_xue_digits_by_hand():
    """36 trials x 200 epochs x 50,000 images x 2 views, no linear evaluation; batch 512."""
    row = estimate(_spec("xue_digits"), "x", "cmd", RATES)
    views = 36 * 200 * 50_000 * 2
    assert row.trials == 36 and row.views == views
    assert row.h100_hours == pytest.approx(views / 2000.0 / 3600)
    assert row.pflop == pytest.approx(views * 4e9 / 1e15)
    a10g = views * 4e9 / (gpu_cost.A10G_PEAK_TFLOPS * 1e12 * gpu_cost.A10G_UTILISATION) / 3600
    assert row.a10g_hours == pytest.approx(a10g)


def test_untrained_controls_and_linear_evaluation():
    """xue_reweight: 4 of its 11 variants are untrained (0 views); ouyang_bottleneck adds 200
    epochs of forward-only linear evaluation per trial at batch 256."""
    reweight = estimate(_spec("xue_reweight"), "r", "cmd", RATES)
    assert reweight.trials == 33 and reweight.views == 7 * 3 * 200 * 50_000 * 2
    ouyang = estimate(_spec("ouyang_bottleneck"), "o", "cmd", RATES)
    per_trial = 200 * 50_000 * 2 + 200 * 50_000 * FORWARD_SHARE
    assert ouyang.views == pytest.approx(18 * per_trial)
    assert ouyang.h100_hours == pytest.approx(18 * per_trial / 1000.0 / 3600)


def test_gpu_profiles_and_the_whole_table():
    raw = read_spec_file(gpu_cost.REPOSITORY / "sweeps" / "xue_digits.yaml")
    assert gpu_profiles(raw) == ["strength", "weight_decay"]
    rows = estimates(RATES)
    assert [r.spec for r in rows][:3] == [
        "xue_digits.yaml",
        "xue_digits.yaml --profile strength",
        "xue_digits.yaml --profile weight_decay",
    ]
    assert all("cpu" not in r.spec for r in rows)
    assert all(r.h100_hours > 0 and not r.note for r in rows)
    lines = gpu_cost.markdown(rows, RATES)
    assert sum(line.startswith("| xue_") or line.startswith("| ouyang_") for line in lines) == len(
        rows
    )
