"""The four Parquet tables of a sweep, built from its trials' records (`analysis.trials.Trial`),
each with an explicit pyarrow schema and key-value metadata:

- trials.parquet   one row per trial: status, error, the flat resolved config, final metrics
- probes.parquet   one row per trial x tap x target: accuracy, protocol, feature dimension
- gaps.parquet     per setting (head x every swept axis but the seed) x target, over seeds:
                   n, mean/std of pre, post and gap = pre - post, and the gap's paired 95% CI
- history.parquet  one row per trial x epoch
- bounds.parquet   [O]'s MI bounds against accuracy, per trial and across trials
                   (`analysis.bounds`)
- groups.parquet   average and worst-group accuracy per setting x target x tap x method,
                   over seeds (data with groups; `analysis.groups`)
- fewshot.parquet  few-shot probe accuracy per setting x target x tap x shots, over seeds
                   and subsets (`analysis.fewshot`)

Probe rows come from the records' typed probe rows, never from metric names. Writing is
`analysis.parquet.write_table`: atomic, and skipped when the content is unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from analysis.bounds import bounds_table
from analysis.fewshot import fewshot_table
from analysis.groups import groups_table
from analysis.parquet import to_table
from analysis.trials import FINISHED, Trial
from headsweep import metrics as M
from headsweep.health import USABLE, assess

HEAD_KEY = "model.head.name"
DESCRIPTIONS = {
    "trials": "one row per trial: status, error, flat resolved config, final metrics",
    "probes": "one row per trial x tap x target: probe accuracy, protocol, feature dimension",
    "gaps": "per setting x target over seeds: n, mean/std of pre, post, gap = pre - post, "
    "paired 95% CI of the gap",
    "history": "one row per trial x epoch: the metrics reported every epoch",
}
CONFIG_COLUMNS = "config_columns"  # trials.parquet metadata: its config columns, as JSON


def varying_keys(trials: list[Trial]) -> list[str]:
    """Config keys whose value differs between trials (the swept axes, as the trials saw them)."""
    keys = sorted({k for t in trials for k in t.config})
    out = []
    for key in keys:
        values = {json.dumps(t.config.get(key), sort_keys=True) for t in trials}
        if len(values) > 1:
            out.append(key)
    return out


def setting_keys(trials: list[Trial], seed_key: str) -> list[str]:
    """What defines a setting: the head (always, when there is one) and every varying key
    except the seed."""
    keys = [k for k in varying_keys(trials) if k not in (seed_key, HEAD_KEY)]
    has_head = any(HEAD_KEY in t.config for t in trials)
    return ([HEAD_KEY] if has_head else []) + keys


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metric columns: numbers under a metric name (not the report's own keys)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and M.is_value(k)
    }


def health_of(t: Trial) -> str | None:
    """A finished trial's training health (headsweep.health.assess: "ok", the reasons it did
    not train, or "not measured" for a trial stored before health was recorded); None for a
    trial that did not finish."""
    if t.status != FINISHED or t.record is None:
        return None
    return assess(t.record.metrics)


def trials_rows(sweep: str, trials: list[Trial]) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        row: dict[str, Any] = {
            "sweep": sweep,
            "trial_id": t.trial_id,
            "status": t.status,
            "health": health_of(t),
            "error": t.error or None,
            "mlflow_run_id": t.run_id or None,
            "epochs_done": t.epochs_done,
            "wall_time_s": t.wall_time_s,
            "node_ip": t.node_ip,
            "node_id": t.node_id,
        }
        row.update(t.config)
        row.update(_numeric(t.metrics()))
        rows.append(row)
    return rows


def probes_rows(sweep: str, trials: list[Trial], settings: list[str]) -> list[dict[str, Any]]:
    """One row per probe row of each finished trial's record; tap_index is the tap's place in
    the trial's order of taps (pre first, then the head's layers, post last)."""
    rows = []
    for t in trials:
        if t.status != FINISHED or t.record is None:
            continue
        probes = t.record.probes
        health = health_of(t)  # once per trial, not per probe row
        taps = list(dict.fromkeys(p.tap for p in probes))
        targets = list(dict.fromkeys(p.target for p in probes))
        for target in targets:
            for probe in (p for tap in taps for p in probes if p.tap == tap and p.target == target):
                rows.append(
                    {
                        "sweep": sweep,
                        "trial_id": t.trial_id,
                        "seed": t.seed,
                        "health": health,
                        **{k: t.config.get(k) for k in settings},
                        "target": target,
                        "tap": probe.tap,
                        "tap_index": taps.index(probe.tap),
                        "is_pre": probe.tap == "pre",
                        "is_post": probe.tap == "post",
                        "accuracy": float(probe.accuracy),
                        "protocol": probe.protocol,
                        "dim": None if probe.dim is None else int(probe.dim),
                    }
                )
    return rows


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of trials that trained (headsweep.health.USABLE; docs/science.md §11): what
    gap tables and verdicts average. A table stored before health was recorded is all usable."""
    if "health" not in frame:
        return frame
    return frame[frame["health"].isin(USABLE) | frame["health"].isna()]


def gaps_frame(probes: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """Paired over seeds: per trial gap = pre - post, then mean, std and a t-interval."""
    columns = [
        *settings,
        "target",
        "n",
        "pre_mean",
        "pre_std",
        "post_mean",
        "post_std",
        "gap_mean",
        "gap_std",
        "gap_ci_low",
        "gap_ci_high",
    ]
    if probes.empty:
        return pd.DataFrame(columns=columns)
    paired = (
        probes[probes["tap"].isin(["pre", "post"])]
        .pivot_table(
            index=["trial_id", *settings, "target"],
            columns="tap",
            values="accuracy",
            dropna=False,
            aggfunc="first",
        )
        .reset_index()
    )
    paired = paired.dropna(subset=["pre", "post"])
    paired["gap"] = paired["pre"] - paired["post"]
    rows = []
    keys = [*settings, "target"]
    for values, group in paired.groupby(keys, dropna=False, sort=True):
        n = len(group)
        gap = group["gap"].to_numpy()
        half = (stats.t.ppf(0.975, n - 1) * gap.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        rows.append(
            {
                **dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=False)),
                "n": n,
                "pre_mean": group["pre"].mean(),
                "pre_std": _std(group["pre"]),
                "post_mean": group["post"].mean(),
                "post_std": _std(group["post"]),
                "gap_mean": gap.mean(),
                "gap_std": _std(group["gap"]),
                "gap_ci_low": gap.mean() - half,
                "gap_ci_high": gap.mean() + half,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _std(series: pd.Series) -> float:
    return float(series.std(ddof=1)) if len(series) > 1 else math.nan


def history_rows(sweep: str, trials: list[Trial], settings: list[str]) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        for epoch_metrics in t.history:
            if M.EPOCH not in epoch_metrics:
                continue
            epoch = int(epoch_metrics[M.EPOCH])
            rows.append(
                {
                    "sweep": sweep,
                    "trial_id": t.trial_id,
                    "epoch": epoch,
                    "seed": t.seed,
                    **{k: t.config.get(k) for k in settings},
                    "time_total_s": t.epoch_times.get(epoch, math.nan),
                    **_numeric(epoch_metrics),
                }
            )
    # A resumed trial repeats the epochs after its checkpoint: keep the last report of each.
    latest = {(row["trial_id"], row["epoch"]): row for row in rows}
    return [latest[key] for key in sorted(latest)]


def _frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = frame.to_dict("records")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, np.generic):
                row[key] = value.item()
            if isinstance(value, float) and math.isnan(value):
                row[key] = None if key in ("pre_std", "post_std", "gap_std") else value
    return rows


def build_tables(
    sweep: str, trials: list[Trial], meta: Mapping[str, str], seed_key: str
) -> dict[str, pa.Table]:
    """The four tables of a sweep; `seed_key` is the config key that seeds a trial."""
    settings = setting_keys(trials, seed_key)
    meta = {**meta, "settings": json.dumps(settings)}

    def described(name: str) -> dict[str, str]:
        return {**meta, "table": name, "description": DESCRIPTIONS[name]}

    base = {"sweep": pa.string(), "trial_id": pa.string()}
    config_columns = sorted({k for t in trials for k in t.config})
    trials_table = to_table(
        trials_rows(sweep, trials),
        {
            **base,
            "status": pa.string(),
            "health": pa.string(),
            "error": pa.string(),
            "mlflow_run_id": pa.string(),
            "epochs_done": pa.int64(),
            "wall_time_s": pa.float64(),
            "node_ip": pa.string(),
            "node_id": pa.string(),
        },
        {**described("trials"), CONFIG_COLUMNS: json.dumps(config_columns)},
    )
    schema = trials_table.schema
    setting_types = {k: schema.field(k).type for k in settings if k in schema.names}
    probes = to_table(
        probes_rows(sweep, trials, settings),
        {
            **base,
            "seed": pa.int64(),
            "health": pa.string(),
            **setting_types,
            "target": pa.string(),
            "tap": pa.string(),
            "tap_index": pa.int64(),
            "is_pre": pa.bool_(),
            "is_post": pa.bool_(),
            "accuracy": pa.float64(),
            "protocol": pa.string(),
            "dim": pa.int64(),
        },
        described("probes"),
    )
    gaps = gaps_frame(
        usable(probes.to_pandas()), settings
    )  # a trial that did not train: shown, never averaged
    stat_types = {
        c: pa.float64() for c in gaps.columns if c.endswith(("_mean", "_std", "_low", "_high"))
    }
    gaps_table = to_table(
        _frame_rows(gaps),
        {**setting_types, "target": pa.string(), "n": pa.int64(), **stat_types},
        described("gaps"),
    )
    history = to_table(
        history_rows(sweep, trials, settings),
        {
            **base,
            "epoch": pa.int64(),
            "seed": pa.int64(),
            **setting_types,
            "time_total_s": pa.float64(),
        },
        described("history"),
    )
    bounds = bounds_table(sweep, history, trials_table, setting_types, meta)
    return {
        "trials": trials_table,
        "probes": probes,
        "gaps": gaps_table,
        "history": history,
        "bounds": bounds,
        "groups": groups_table(trials, settings, setting_types, meta),
        "fewshot": fewshot_table(sweep, trials, settings, setting_types, meta),
    }
