"""[O]'s bounds against accuracy (analysis.bounds) on synthetic histories: a monotone relation
gives rho = 1, a shuffled one a rho within the null's spread, a constant or too short series
NaN; the table's columns and types; the across-trials interval; the figure."""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis.bounds import (
    SWEEP,
    TRIAL,
    bounds_table,
    fisher_interval,
    spearman,
)
from analysis.bounds_figure import bounds_figures
from headsweep import metrics as M

HEAD = "model.head.name"
ONLINE_PRE, ONLINE_POST = M.online("digit", "pre"), M.online("digit", "post")


def history_of(trial_id: str, head: str, lower, upper, pre, post) -> list[dict]:
    return [
        {
            "sweep": "s",
            "trial_id": trial_id,
            "epoch": epoch + 1,
            "seed": 0,
            HEAD: head,
            M.MI_LOWER: lower[epoch],
            M.MI_UPPER: upper[epoch],
            ONLINE_PRE: pre[epoch],
            ONLINE_POST: post[epoch],
        }
        for epoch in range(len(lower))
    ]


def tables(histories: list[dict], finals: dict[str, float]) -> pa.Table:
    history = pa.Table.from_pylist(histories)
    trials = pa.Table.from_pylist(
        [
            {"trial_id": t, M.probe("digit", "pre"): acc, M.probe("digit", "post"): acc / 2}
            for t, acc in finals.items()
        ]
    )
    return bounds_table("s", history, trials, {HEAD: pa.string()}, {"sweep": "s"})


def row(frame: pd.DataFrame, trial_id: str, bound: str, tap: str) -> pd.Series:
    match = frame[(frame["trial_id"] == trial_id) & (frame["bound"] == bound)]
    return match[match["tap"] == tap].iloc[0]


def test_a_monotone_relation_has_rho_one_and_a_reversed_one_minus_one():
    epochs = np.arange(12, dtype=float)
    accuracy = 1 - np.exp(-epochs / 3)  # saturating, not linear: ranks are what count
    assert spearman(epochs**3, accuracy) == (pytest.approx(1.0), 12)
    assert spearman(-np.log1p(epochs), accuracy)[0] == pytest.approx(-1.0)


def test_a_shuffled_relation_is_near_zero_within_the_null_spread():
    n = 400
    rng = np.random.default_rng(0)
    x = np.arange(n, dtype=float)
    y = rng.permutation(x)
    rho, used = spearman(x, y)
    # Under independence rho_s has mean 0 and variance 1 / (n - 1): four standard deviations.
    assert used == n and abs(rho) < 4 / math.sqrt(n - 1)


@pytest.mark.parametrize(
    "x, y",
    [
        ([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]),  # constant accuracy
        ([2.0, 2.0, 2.0], [0.1, 0.2, 0.3]),  # constant bound
        ([1.0, 2.0], [0.1, 0.2]),  # two epochs
        ([1.0, 2.0, math.nan, 4.0], [0.1, math.nan, 0.3, 0.4]),  # two finite pairs left
        ([], []),
    ],
)
def test_undefined_correlations_are_nan_not_errors(x, y):
    with np.errstate(all="raise"):
        assert math.isnan(spearman(x, y)[0])


def test_fisher_interval_covers_rho_and_needs_four_points():
    low, high = fisher_interval(0.5, 20)
    assert -1 < low < 0.5 < high < 1
    # Fieller et al.: half-width 1.96 * sqrt(1.06 / (n - 3)) on the z scale
    assert math.atanh(high) - math.atanh(0.5) == pytest.approx(1.96 * math.sqrt(1.06 / 17), 1e-3)
    assert all(math.isnan(v) for v in fisher_interval(0.5, 3))
    assert all(math.isnan(v) for v in fisher_interval(math.nan, 30))
    assert fisher_interval(1.0, 10) == (1.0, 1.0)


def test_the_table_per_trial_and_across_trials_with_its_columns_and_types():
    up = np.linspace(0.1, 0.9, 6)
    rng = np.random.default_rng(1)
    histories = history_of("t0", "mlp", up, 2 * up, up**2, up / 3)  # bounds rise with accuracy
    histories += history_of("t1", "none", -up, [1.0] * 6, up, up)  # falling, constant
    histories += history_of("t2", "mlp", up[:2], up[:2], up[:2], up[:2])  # two epochs only
    for k in range(3, 8):
        histories += history_of(f"t{k}", "linear", up + k, up + k, up, rng.permutation(up))
    finals = {f"t{k}": 0.1 * k for k in range(8)}
    table = tables(histories, finals)
    frame = table.to_pandas()
    assert frame.columns[:5].tolist() == ["sweep", "scope", "trial_id", "seed", HEAD]
    for name, kind in {
        "sweep": pa.string(),
        "scope": pa.string(),
        "trial_id": pa.string(),
        "seed": pa.int64(),
        HEAD: pa.string(),
        "target": pa.string(),
        "bound": pa.string(),
        "tap": pa.string(),
        "accuracy": pa.string(),
        "n": pa.int64(),
        "rho": pa.float64(),
        "ci_low": pa.float64(),
        "ci_high": pa.float64(),
        "bound_final": pa.float64(),
        "accuracy_final": pa.float64(),
    }.items():
        assert table.schema.field(name).type == kind, name
    assert table.schema.metadata[b"table"] == b"bounds"
    assert b"Fisher" in table.schema.metadata[b"description"]

    per_trial = frame[frame["scope"] == TRIAL]
    assert len(per_trial) == 8 * 2 * 2  # trials x bounds x taps, one target
    assert row(per_trial, "t0", "mi_lower", "pre")["rho"] == pytest.approx(1.0)
    assert row(per_trial, "t0", "mi_upper", "post")["rho"] == pytest.approx(1.0)
    assert row(per_trial, "t0", "mi_lower", "pre")["accuracy"] == ONLINE_PRE
    assert row(per_trial, "t1", "mi_lower", "pre")["rho"] == pytest.approx(-1.0)
    assert math.isnan(row(per_trial, "t1", "mi_upper", "pre")["rho"])  # constant bound
    short = row(per_trial, "t2", "mi_lower", "pre")
    assert short["n"] == 2 and math.isnan(short["rho"])
    t0 = row(per_trial, "t0", "mi_upper", "pre")
    assert t0["bound_final"] == pytest.approx(1.8) and t0["accuracy_final"] == 0.0
    assert per_trial["ci_low"].isna().all()  # epochs of one run: no sampling interval

    across = frame[frame["scope"] == SWEEP]
    assert len(across) == 2 * 2 and across["trial_id"].isna().all()
    lower = across[(across["bound"] == "mi_lower") & (across["tap"] == "pre")].iloc[0]
    assert lower["accuracy"] == M.probe("digit", "pre") and lower["n"] == 8
    finals_lower = [row(per_trial, f"t{k}", "mi_lower", "pre")["bound_final"] for k in range(8)]
    expected = spearman(finals_lower, [finals[f"t{k}"] for k in range(8)])[0]
    assert lower["rho"] == pytest.approx(expected)
    assert lower["ci_low"] < lower["rho"] < lower["ci_high"]


def test_a_sweep_without_bounds_gives_an_empty_typed_table():
    history = pa.Table.from_pylist([{"trial_id": "t0", "epoch": 1, "train/loss": 1.0}])
    table = bounds_table("s", history, pa.table({"trial_id": ["t0"]}), {}, {})
    assert table.num_rows == 0 and table.schema.field("rho").type == pa.float64()


def test_the_figure_is_drawn_once_per_target_and_redrawn_identically(tmp_path):
    up = np.linspace(0.1, 0.9, 5)
    histories = history_of("a", "mlp", up, up, up, up) + history_of("b", "none", up, -up, up, up)
    history = pd.DataFrame(histories)
    bounds = tables(histories, {"a": 0.5, "b": 0.7}).to_pandas()
    [path] = bounds_figures(bounds, history, tmp_path, "s")
    first = path.read_bytes()
    assert path.name == "bounds_digit.png" and len(first) > 10_000
    bounds_figures(bounds, history, tmp_path, "s")
    assert path.read_bytes() == first


def test_a_target_probed_online_only_has_no_across_trials_rows():
    up = np.linspace(0.1, 0.9, 4)
    histories = [r for k in range(4) for r in history_of(f"t{k}", "mlp", up, up, up, up)]
    no_final = pa.table({"trial_id": [f"t{k}" for k in range(4)]})
    table = bounds_table("s", pa.Table.from_pylist(histories), no_final, {HEAD: pa.string()}, {})
    scopes = table.column("scope").to_pylist()
    assert scopes.count(TRIAL) == 4 * 2 * 2 and SWEEP not in scopes
