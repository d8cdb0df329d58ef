"""Few-shot curves of a sweep (headsweep.fewshot): the table `fewshot.parquet` (its figure is
`analysis.figures.fewshot_figures`).

The table has one row per setting (head x every swept axis but the seed) x target x tap x
shots, over the trials' seeds and random subsets: n (seeds x subsets; shots = 0, "all", has one
subset per seed), the number of seeds, mean, std, and a 95% t-interval of the mean. The
interval treats every (seed, subset) accuracy as an independent draw, so it mixes the spread of
training seeds with that of the subsets drawn; with one seed it is the subsets' alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from analysis.parquet import to_table
from analysis.trials import FINISHED, Trial
from analysis.verdicts import interval

DESCRIPTION = (
    "per setting x target x tap x shots (0 = all) over seeds and random subsets: n, seeds, "
    "mean/std of the few-shot probe accuracy and a 95% t-interval"
)
STATS = ("mean", "std", "ci_low", "ci_high")


def fewshot_rows(trials: list[Trial], settings: list[str]) -> list[dict[str, Any]]:
    """One row per few-shot point of every finished trial's record."""
    rows = []
    for t in trials:
        if t.status != FINISHED or t.record is None:
            continue
        for point in t.record.few_shot:
            rows.append(
                {
                    "trial_id": t.trial_id,
                    "seed": t.seed,
                    **{k: t.config.get(k) for k in settings},
                    "target": point.target,
                    "tap": point.tap,
                    "shots": int(point.shots),
                    "subset": int(point.subset),
                    "accuracy": float(point.accuracy),
                }
            )
    return rows


def fewshot_frame(points: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """Mean, std and 95% t-interval of the accuracy per setting x target x tap x shots."""
    keys = [*settings, "target", "tap", "shots"]
    columns = [*keys, "n", "seeds", *STATS]
    if points.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for values, group in points.groupby(keys, dropna=False, sort=True):
        accuracy = group["accuracy"].to_numpy(dtype=float)
        iv = interval(accuracy)  # the one 95% t-interval of the analysis
        rows.append(
            {
                **dict(zip(keys, values, strict=True)),
                "n": len(accuracy),
                "seeds": int(group["seed"].nunique()),
                "mean": iv.mean,
                "std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else math.nan,
                "ci_low": iv.low,
                "ci_high": iv.high,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def fewshot_table(
    sweep: str,
    trials: list[Trial],
    settings: list[str],
    setting_types: Mapping[str, pa.DataType],
    meta: Mapping[str, str],
) -> pa.Table:
    """fewshot.parquet: explicit types for every column (empty when no trial ran a curve)."""
    frame = fewshot_frame(pd.DataFrame(fewshot_rows(trials, settings)), settings)
    rows = [
        {
            "sweep": sweep,
            **{k: _plain(v) for k, v in row.items()},
        }
        for row in frame.to_dict("records")
    ]
    schema = {
        "sweep": pa.string(),
        **{k: setting_types.get(k, pa.string()) for k in settings},
        "target": pa.string(),
        "tap": pa.string(),
        "shots": pa.int64(),
        "n": pa.int64(),
        "seeds": pa.int64(),
        **{s: pa.float64() for s in STATS},
    }
    return to_table(rows, schema, {**meta, "table": "fewshot", "description": DESCRIPTION})


def _plain(value: Any) -> Any:
    """numpy scalars -> python; a NaN statistic (one draw) -> null."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


__all__ = ["fewshot_frame", "fewshot_rows", "fewshot_table"]
