"""CPU-scale checks of the trends docs/science.md §6 reports from real data (T6, T8, T10).

Slow (tens of minutes on 2 cores): `pytest -m slow`. Each runs a shipped spec with its `cpu`
profile, a reduced grid and 3 seeds, through the real CLI on real Ray Tune, then judges the
direction with analysis.trends (the same code REPRODUCTION.md uses). Outcomes are reported in
REPRODUCTION.md whichever way they go; the checks are not tuned to pass.
"""

from pathlib import Path

import pandas as pd
import pytest

from analysis import trends
from sweeps import cli
from sweeps.locations import Locations

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(3600)]
REPO = Path(__file__).resolve().parents[1]


def run_spec(tmp_path, spec: str, *sets: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = tmp_path / "runs"
    args = [
        "run",
        str(REPO / "sweeps" / spec),
        "--profile",
        "cpu",
        "--name",
        "t",
        "--root",
        str(root),
    ]
    for item in sets:
        args += ["--set", item]
    assert cli.main(args) == 0
    tables = Locations.make(root).tables("t")
    return pd.read_parquet(tables / "probes.parquet"), pd.read_parquet(tables / "trials.parquet")


def test_t6_digit_gap_grows_with_drop_rate(ray_session, tmp_path):
    probes, _ = run_spec(
        tmp_path,
        "xue_digits.yaml",
        "space.model.head={grid: [{name: mlp, preset: sas}]}",
        "space.aug.p_drop={grid: [0.0, 0.5, 1.0]}",
    )
    result = trends.t6_gap_grows_with_drop_rate(probes)
    print(result.line())
    assert result.holds, result.line()


def test_t8_fixed_reweighting_head(ray_session, tmp_path):
    probes, _ = run_spec(
        tmp_path,
        "xue_reweight.yaml",
        "space.model.head={grid: [{name: mlp, preset: sas}, "
        "{name: fixed_reweight, kappa: 1.0}, {name: fixed_reweight, kappa: 1.05},"
        " {name: fixed_reweight, kappa: 1.2}]}",
    )
    result = trends.t8_reweighting(probes)
    print(result.line())
    assert result.holds, result.line()


def test_t10_mi_regulariser_lowers_i2_without_losing_accuracy(ray_session, tmp_path):
    _, trials = run_spec(
        tmp_path,
        "ouyang_bottleneck.yaml",
        "space.variant={grid: [{loss.mi_lambda: 0.0}, {loss.mi_lambda: 0.5}]}",
    )
    result = trends.t10_mi_regulariser(trials, "digit")
    print(result.line())
    assert result.holds, result.line()
