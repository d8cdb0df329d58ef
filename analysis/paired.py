"""Probes tables reshaped for the paired comparisons of the image trends (analysis.trends):
pre and post of one model side by side, trained and untrained trials apart, and per-seed
differences and slopes turned into `analysis.verdicts` intervals.

A probes table has one row per trial x tap x target; every comparison pairs over seeds, so the
helpers keep the `seed` column and reduce to one value per seed before the interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.verdicts import EPOCHS, Interval, interval


def paired(probes: pd.DataFrame, target: str) -> pd.DataFrame:
    """One row per trial: pre, post and gap for `target`."""
    rows = probes[(probes["target"] == target) & probes["tap"].isin(["pre", "post"])]
    keys = [
        c
        for c in rows.columns
        if c not in ("tap", "tap_index", "is_pre", "is_post", "accuracy", "dim", "protocol")
    ]
    wide = rows.pivot_table(
        index=keys, columns="tap", values="accuracy", aggfunc="first", dropna=False
    ).reset_index()
    wide = wide.dropna(subset=[c for c in ("pre", "post") if c in wide])
    wide["gap"] = wide["pre"] - wide["post"]
    return wide


def trained_rows(wide: pd.DataFrame) -> pd.DataFrame:
    """The trials that trained (epochs > 0); all of them where epochs is not a column."""
    return wide[wide[EPOCHS] > 0] if EPOCHS in wide else wide


def untrained_rows(wide: pd.DataFrame) -> pd.DataFrame:
    """The untrained-encoder controls (epochs 0), the baseline of the reweighting gaps (§9)."""
    return wide[wide[EPOCHS] == 0] if EPOCHS in wide else wide.iloc[:0]


def by_seed(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame.groupby("seed")[column].mean()


def paired_diff(a: pd.Series, b: pd.Series) -> Interval:
    """Paired over the seeds both have."""
    seeds = a.index.intersection(b.index)
    return interval((a.loc[seeds] - b.loc[seeds]).to_numpy())


def seed_slopes(frame: pd.DataFrame, axis: str, value: str, log_x: bool = False) -> Interval:
    """Interval of the per-seed least-squares slope of `value` against `axis`."""
    slopes = []
    for _, group in frame.groupby("seed"):
        x = group[axis].to_numpy(dtype=float)
        y = group[value].to_numpy(dtype=float)
        if log_x:
            keep = x > 0
            x, y = np.log10(x[keep]), y[keep]
        if len(np.unique(x)) >= 2:
            slopes.append(float(np.polyfit(x, y, 1)[0]))
    return interval(slopes)


def main_target(probes: pd.DataFrame) -> str:
    """The target a sweep's image trends are judged on: the digit where there is one."""
    targets = set(probes["target"])
    if "digit" in targets:
        return "digit"
    return "object" if "object" in targets else sorted(targets)[0]
