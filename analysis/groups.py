"""The worst-group table of a sweep (`groups.parquet`) and its pre-vs-post summary lines.

groups.parquet: per setting (head x every swept axis but the seed) x target x tap x method
(erm | dfr, headsweep.groups), over seeds: n, mean, std and a 95% t-interval of the average and
of the worst-group test accuracy, and the number of test groups. Built from the records' typed
group rows (`TrialRecord.groups`), never from metric names; empty (with its schema) for sweeps
whose data has no groups.
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
    "per setting x target x tap x method over seeds: n, mean/std/95% CI of the average and "
    "worst-group test accuracy (data with groups)"
)
KEYS = ("target", "tap", "method")
MEASURES = ("average", "worst")  # worst = worst-group accuracy
STATS = ("mean", "std", "ci_low", "ci_high")


def group_rows(trials: list[Trial], settings: list[str]) -> list[dict[str, Any]]:
    """One row per group row of each finished trial's record."""
    rows = []
    for t in trials:
        if t.status != FINISHED or t.record is None:
            continue
        for g in t.record.groups:
            rows.append(
                {
                    "trial_id": t.trial_id,
                    **{k: t.config.get(k) for k in settings},
                    "target": g.target,
                    "tap": g.tap,
                    "method": g.method,
                    "average": float(g.average),
                    "worst": float(g.worst_group),
                    "n_groups": int(g.n_groups),
                }
            )
    return rows


def _summary(values: pd.Series) -> dict[str, float | None]:
    """mean, std (None for one seed) and the 95% t-interval of `analysis.verdicts.interval`
    (NaN for one seed)."""
    iv = interval(values)
    std = float(values.std(ddof=1)) if iv.n > 1 else None
    return {"mean": iv.mean, "std": std, "ci_low": iv.low, "ci_high": iv.high}


def groups_frame(rows: list[dict[str, Any]], settings: list[str]) -> list[dict[str, Any]]:
    """Rows aggregated over seeds, per setting x target x tap x method."""
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    keys = [*settings, *KEYS]
    out = []
    for values, group in frame.groupby(keys, dropna=False, sort=True):
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        # groupby turns a missing setting value into NaN: store it as null like the other tables
        row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        row["n"] = len(group)
        row["n_groups"] = int(group["n_groups"].max())
        for measure in MEASURES:
            for stat, value in _summary(group[measure]).items():
                row[f"{measure}_{stat}"] = value
        out.append(row)
    return out


def groups_table(
    trials: list[Trial],
    settings: list[str],
    setting_types: Mapping[str, pa.DataType],
    meta: Mapping[str, str],
) -> pa.Table:
    """groups.parquet as an arrow table with an explicit schema."""
    schema: dict[str, pa.DataType] = {
        **setting_types,
        "target": pa.string(),
        "tap": pa.string(),
        "method": pa.string(),
        "n": pa.int64(),
        "n_groups": pa.int64(),
        **{f"{m}_{s}": pa.float64() for m in MEASURES for s in STATS},
    }
    rows = groups_frame(group_rows(trials, settings), settings)
    return to_table(rows, schema, {**meta, "table": "groups", "description": DESCRIPTION})


def pre_post(groups: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """One row per setting x target x method: average and worst-group accuracy (means over
    seeds) of pre and post side by side; empty when there are no group rows."""
    if groups.empty:
        return pd.DataFrame()
    taps = groups[groups["tap"].isin(["pre", "post"])]
    wide = taps.pivot_table(
        index=[*settings, "target", "method"],
        columns="tap",
        values=["average_mean", "worst_mean"],
        aggfunc="first",
        dropna=False,
    )
    wide.columns = [f"{tap} {'avg' if m == 'average_mean' else 'worst'}" for m, tap in wide.columns]
    order = [c for c in ("pre avg", "pre worst", "post avg", "post worst") if c in wide.columns]
    return wide[order].reset_index()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def pre_post_lines(
    groups: pd.DataFrame, settings: list[str], short: Any, markdown: bool
) -> list[str]:
    """The pre-vs-post worst-group table as markdown or aligned text lines (`short` names a
    setting column); [] when the sweep has no group rows."""
    table = pre_post(groups, settings)
    if table.empty:
        return []
    header = [short(c) if c in settings else c for c in table.columns]
    cells = [[_cell(v) for v in row] for row in table.itertuples(index=False)]
    title = "Worst-group accuracy (test split; mean over seeds), pre vs post:"
    if markdown:
        lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(row) + " |" for row in cells]
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [title, fmt.format(*header)] + [fmt.format(*row) for row in cells]
