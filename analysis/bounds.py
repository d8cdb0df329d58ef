"""Do [O]'s mutual-information bounds track downstream accuracy? ([O] Fig. 2-3.)

Every epoch a contrastive trial logs [O]'s proxies `train/mi_lower` and `train/mi_upper` and the
cheap online probe `online/<target>/<tap>`; at the end, the frozen-feature probe
`probe/<target>/<tap>`. From the history and trials tables this module builds `bounds.parquet`:

- scope "trial": per trial x target x bound x tap, the Spearman rank correlation across epochs
  of the bound with the online probe accuracy at that tap ([O] Fig. 2: within a run), with the
  bound's final value and the trial's final probe accuracy. No interval: successive epochs of
  one run are not independent samples, so a sampling interval would overstate what is known.
- scope "sweep": per target x bound x tap, the Spearman correlation across the sweep's trials of
  the final bound with the final probe accuracy ([O] Fig. 3: across projector variants), with a
  95% interval from Fisher's z-transform using the variance 1.06 / (n - 3) of atanh(rho_s)
  (Fieller, Hartley & Pearson, Biometrika 1957). Closed form, so no random seed is involved and
  re-running the analysis gives the same numbers; it needs n >= 4 trials, else the interval is
  NaN. A perfect rank order (rho = +-1) gives the degenerate interval [rho, rho].

A correlation is NaN, never an error, when fewer than 3 paired finite values remain or either
series is constant (rank correlation is undefined there). Pure: pandas, numpy, scipy; the
figure is `analysis.bounds_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from analysis.parquet import to_table
from headsweep import metrics as M

BOUNDS = {"mi_lower": M.MI_LOWER, "mi_upper": M.MI_UPPER}
TAPS = ("pre", "post")
TRIAL, SWEEP = "trial", "sweep"  # the scope column's values
MIN_POINTS = 3  # fewer paired values: the rank correlation is NaN
MIN_CI_POINTS = 4  # Fisher's interval divides by n - 3
FIELLER_VARIANCE = 1.06  # var(atanh rho_spearman) ~ 1.06 / (n - 3)
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
DESCRIPTION = (
    "[O]'s MI bounds vs accuracy: per trial, Spearman rho across epochs of train/mi_lower and "
    "train/mi_upper with online/<target>/<tap>; per sweep, rho across trials of the final bound "
    "with probe/<target>/<tap>, Fisher-z 95% CI (var 1.06/(n-3))"
)


def spearman(x: Any, y: Any) -> tuple[float, int]:
    """(rho, n): the rank correlation of the finite pairs of x and y and how many there were;
    rho is NaN with fewer than MIN_POINTS pairs or a constant series."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(keep.sum())
    if n < MIN_POINTS or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, n
    return float(stats.spearmanr(a, b).statistic), n


def fisher_interval(rho: float, n: int) -> tuple[float, float]:
    """95% interval of a Spearman rho from n independent pairs (see the module docstring)."""
    if not math.isfinite(rho) or n < MIN_CI_POINTS:
        return math.nan, math.nan
    if abs(rho) >= 1.0:
        return rho, rho
    z = math.atanh(rho)
    half = Z_95 * math.sqrt(FIELLER_VARIANCE / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


def _targets(history: pd.DataFrame) -> list[str]:
    """The targets with an online probe at every tap of TAPS."""
    found = set()
    for column in history.columns:
        metric = M.parse(str(column))
        if (
            metric is not None
            and metric.kind == "online"
            and metric.tap == TAPS[0]
            and all(M.online(metric.target, tap) in history for tap in TAPS)
        ):
            found.add(metric.target)
    return sorted(found)


def _final_accuracy(trials: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(trial_id, probe metric) -> the trial's final probe accuracy."""
    columns = [c for c in trials.columns if M.kind_of(str(c)) == "probe"]
    out = {}
    for _, row in trials.iterrows():
        for column in columns:
            out[(str(row["trial_id"]), str(column))] = float(row[column])
    return out


def trial_rows(
    sweep: str, history: pd.DataFrame, trials: pd.DataFrame, settings: list[str]
) -> list[dict[str, Any]]:
    """Scope "trial": one row per trial x target x bound x tap (see the module docstring)."""
    if history.empty or not all(c in history for c in BOUNDS.values()):
        return []
    finals = _final_accuracy(trials) if "trial_id" in trials else {}
    rows = []
    for trial_id, frame in history.groupby("trial_id", sort=True):
        frame = frame.sort_values("epoch")
        first = frame.iloc[0]
        for target in _targets(history):
            for bound, column in BOUNDS.items():
                values = frame[column].to_numpy(dtype=float)
                finite = values[np.isfinite(values)]
                for tap in TAPS:
                    accuracy = M.online(target, tap)
                    rho, n = spearman(values, frame[accuracy])
                    rows.append(
                        {
                            "sweep": sweep,
                            "scope": TRIAL,
                            "trial_id": str(trial_id),
                            "seed": _int(first.get("seed")),
                            **{k: _plain(first.get(k)) for k in settings},
                            "target": target,
                            "bound": bound,
                            "tap": tap,
                            "accuracy": accuracy,
                            "n": n,
                            "rho": rho,
                            "ci_low": math.nan,
                            "ci_high": math.nan,
                            "bound_final": float(finite[-1]) if finite.size else math.nan,
                            "accuracy_final": finals.get(
                                (str(trial_id), M.probe(target, tap)), math.nan
                            ),
                        }
                    )
    return rows


def sweep_rows(sweep: str, per_trial: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scope "sweep": per target x bound x tap, rho across trials of the final bound with the
    final probe accuracy, and its Fisher-z interval."""
    if not per_trial:
        return []
    frame = pd.DataFrame(per_trial)
    rows = []
    for (target, bound, tap), group in frame.groupby(["target", "bound", "tap"], sort=True):
        if group["accuracy_final"].isna().all():
            continue  # a target probed online only (not in probe.targets): nothing to rank
        rho, n = spearman(group["bound_final"], group["accuracy_final"])
        low, high = fisher_interval(rho, n)
        rows.append(
            {
                "sweep": sweep,
                "scope": SWEEP,
                "target": target,
                "bound": bound,
                "tap": tap,
                "accuracy": M.probe(str(target), str(tap)),
                "n": n,
                "rho": rho,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return rows


def bounds_table(
    sweep: str,
    history: pa.Table,
    trials: pa.Table,
    setting_types: Mapping[str, pa.DataType],
    meta: Mapping[str, str],
) -> pa.Table:
    """bounds.parquet: the trial rows, then the sweep rows; the schema is fixed even when the
    trials logged no bounds (a synthetic sweep), so the table is empty but typed."""
    settings = list(setting_types)
    per_trial = trial_rows(sweep, history.to_pandas(), trials.to_pandas(), settings)
    floats = ("rho", "ci_low", "ci_high", "bound_final", "accuracy_final")
    # Undefined values are stored as null, not NaN: arrow compares null equal to null but NaN
    # unequal to itself, and pandas reads both back as NaN.
    rows = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in per_trial + sweep_rows(sweep, per_trial)
    ]
    return to_table(
        rows,
        {
            "sweep": pa.string(),
            "scope": pa.string(),
            "trial_id": pa.string(),
            "seed": pa.int64(),
            **setting_types,
            "target": pa.string(),
            "bound": pa.string(),
            "tap": pa.string(),
            "accuracy": pa.string(),
            "n": pa.int64(),
            **{name: pa.float64() for name in floats},
        },
        {**meta, "table": "bounds", "description": DESCRIPTION},
    )


def _plain(value: Any) -> Any:
    """A pandas cell as a python value (NaN of a missing setting as None)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _int(value: Any) -> int | None:
    value = _plain(value)
    return None if value is None else int(value)
