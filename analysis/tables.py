"""The four Parquet tables of a sweep, each with an explicit pyarrow schema (no object columns)
and key-value metadata:

- trials.parquet   one row per trial: status, error, the flat resolved config, final metrics
- probes.parquet   one row per trial x tap x target: accuracy, protocol, feature dimension
- gaps.parquet     per setting (head x every swept axis but the seed) x target, over seeds:
                   n, mean/std of pre, post and gap = pre - post, and the gap's paired 95% CI
- history.parquet  one row per trial x epoch

Writes are atomic (temp file + rename) and skipped when the content is unchanged, so running the
analysis twice leaves byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from analysis.collect import FINISHED, TrialRecord

SEED_KEYS = ("train.seed", "seed")
HEAD_KEY = "model.head.name"
DESCRIPTIONS = {
    "trials": "one row per trial: status, error, flat resolved config, final metrics",
    "probes": "one row per trial x tap x target: probe accuracy, protocol, feature dimension",
    "gaps": "per setting x target over seeds: n, mean/std of pre, post, gap = pre - post, "
    "paired 95% CI of the gap",
    "history": "one row per trial x epoch: the metrics reported every epoch",
}


# --------------------------------------------------------------------------- typing


def _arrow_type(values: Iterable[Any]) -> pa.DataType:
    """One arrow type for a column of python values (None allowed): bool, int64, float64 or
    string; lists and mappings become JSON strings."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.string()
    if kinds == {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def _cell(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if kind == pa.string():
        return value if isinstance(value, str) else json.dumps(value)
    if kind == pa.float64():
        return float(value)
    return value


def to_table(
    rows: list[dict[str, Any]], fixed: Mapping[str, pa.DataType], name: str, meta: Mapping[str, str]
) -> pa.Table:
    """Rows -> arrow table: `fixed` columns first with their types, then the others sorted,
    each typed from its values."""
    columns = list(fixed)
    columns += sorted({k for row in rows for k in row} - set(fixed))
    fields = []
    for column in columns:
        kind = fixed.get(column) or _arrow_type(row.get(column) for row in rows)
        fields.append(pa.field(column, kind))
    schema = pa.schema(fields, metadata={**meta, "table": name, "description": DESCRIPTIONS[name]})
    arrays = [
        pa.array([_cell(row.get(f.name), f.type) for row in rows], type=f.type) for f in fields
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------- tables


def varying_keys(records: list[TrialRecord]) -> list[str]:
    """Config keys whose value differs between trials (the swept axes, as the trials saw them)."""
    keys = sorted({k for r in records for k in r.config})
    out = []
    for key in keys:
        values = {json.dumps(r.config.get(key), sort_keys=True) for r in records}
        if len(values) > 1:
            out.append(key)
    return out


def setting_keys(records: list[TrialRecord]) -> list[str]:
    """What defines a setting: the head (always, when there is one) and every varying key
    except the seed."""
    keys = [k for k in varying_keys(records) if k not in (*SEED_KEYS, HEAD_KEY)]
    has_head = any(HEAD_KEY in r.config for r in records)
    return ([HEAD_KEY] if has_head else []) + keys


def _numeric(result: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and "/" in k
    }


def trials_rows(sweep: str, records: list[TrialRecord]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        final = r.final or {}
        row: dict[str, Any] = {
            "sweep": sweep,
            "trial_id": r.trial_id,
            "status": r.status,
            "error": r.error or None,
            "mlflow_run_id": r.run_id or None,
            "epochs_done": int(final.get("epoch", len(r.history)) or 0),
            "wall_time_s": float(final.get("time_total_s", math.nan)),
            "node_ip": final.get("node_ip"),
            "node_id": final.get("node_id"),
        }
        row.update(r.config)
        row.update(_numeric(final))
        rows.append(row)
    return rows


def _taps(final: Mapping[str, Any]) -> list[str]:
    """Tap order from the dim/<tap> keys (pre first, post last), else from probe keys."""
    taps = [k.split("/", 1)[1] for k in final if k.startswith("dim/")]
    if not taps:
        taps = list(
            dict.fromkeys(
                k.split("/")[2] for k in final if k.startswith("probe/") and k.count("/") == 2
            )
        )
    return [t for t in taps if t != "gap"]


def probes_rows(sweep: str, records: list[TrialRecord], settings: list[str]) -> list[dict]:
    from headsweep.config import ProbeConfig, build
    from headsweep.probes import protocol_name

    rows = []
    for r in records:
        if r.status != FINISHED:
            continue
        probe_cfg = {k.split(".", 1)[1]: v for k, v in r.config.items() if k.startswith("probe.")}
        try:
            protocol = protocol_name(build(ProbeConfig, probe_cfg))
        except (ValueError, TypeError):
            protocol = str(r.config.get("probe_penalty", "ridge"))  # the synthetic probe
        taps = _taps(r.final)
        targets = list(
            dict.fromkeys(
                k.split("/")[1] for k in r.final if k.startswith("probe/") and k.count("/") == 2
            )
        )
        for target in targets:
            for index, tap in enumerate(taps):
                key = f"probe/{target}/{tap}"
                if key not in r.final:
                    continue
                dim = r.final.get(f"dim/{tap}")
                rows.append(
                    {
                        "sweep": sweep,
                        "trial_id": r.trial_id,
                        "seed": _seed(r.config),
                        **{k: r.config.get(k) for k in settings},
                        "target": target,
                        "tap": tap,
                        "tap_index": index,
                        "is_pre": tap == "pre",
                        "is_post": tap == "post",
                        "accuracy": float(r.final[key]),
                        "protocol": protocol,
                        "dim": None if dim is None else int(dim),
                    }
                )
    return rows


def _seed(config: Mapping[str, Any]) -> int:
    for key in SEED_KEYS:
        if key in config:
            return int(config[key])
    return 0


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


def history_rows(sweep: str, records: list[TrialRecord], settings: list[str]) -> list[dict]:
    rows = []
    for r in records:
        for result in r.history:
            if "epoch" not in result:
                continue
            rows.append(
                {
                    "sweep": sweep,
                    "trial_id": r.trial_id,
                    "epoch": int(result["epoch"]),
                    "seed": _seed(r.config),
                    **{k: r.config.get(k) for k in settings},
                    "time_total_s": float(result.get("time_total_s", math.nan)),
                    **_numeric(result),
                }
            )
    # A resumed trial repeats the epochs after its checkpoint: keep the last report of each.
    latest = {(row["trial_id"], row["epoch"]): row for row in rows}
    return [latest[key] for key in sorted(latest)]


# --------------------------------------------------------------------------- writing


def _frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.to_dict("records")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, np.generic):
                row[key] = value.item()
            if isinstance(value, float) and math.isnan(value):
                row[key] = None if key in ("pre_std", "post_std", "gap_std") else value
    return rows


def build_tables(
    sweep: str, records: list[TrialRecord], meta: Mapping[str, str]
) -> dict[str, pa.Table]:
    settings = setting_keys(records)
    meta = {**meta, "settings": json.dumps(settings)}
    base = {"sweep": pa.string(), "trial_id": pa.string()}
    trials = to_table(
        trials_rows(sweep, records),
        {
            **base,
            "status": pa.string(),
            "error": pa.string(),
            "mlflow_run_id": pa.string(),
            "epochs_done": pa.int64(),
            "wall_time_s": pa.float64(),
            "node_ip": pa.string(),
            "node_id": pa.string(),
        },
        "trials",
        meta,
    )
    setting_types = {k: trials.schema.field(k).type for k in settings if k in trials.schema.names}
    probe_rows = probes_rows(sweep, records, settings)
    probes = to_table(
        probe_rows,
        {
            **base,
            "seed": pa.int64(),
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
        "probes",
        meta,
    )
    gaps = gaps_frame(probes.to_pandas(), settings)
    stat_types = {
        c: pa.float64() for c in gaps.columns if c.endswith(("_mean", "_std", "_low", "_high"))
    }
    gaps_table = to_table(
        _frame_rows(gaps),
        {**setting_types, "target": pa.string(), "n": pa.int64(), **stat_types},
        "gaps",
        meta,
    )
    history = to_table(
        history_rows(sweep, records, settings),
        {
            **base,
            "epoch": pa.int64(),
            "seed": pa.int64(),
            **setting_types,
            "time_total_s": pa.float64(),
        },
        "history",
        meta,
    )
    return {"trials": trials, "probes": probes, "gaps": gaps_table, "history": history}


def content_hash(table: pa.Table) -> str:
    """Hash of the data and the schema without the created_at stamp."""
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"created_at"}
    digest = hashlib.sha256(
        json.dumps(sorted((k.decode(), v.decode()) for k, v in meta.items())).encode()
    )
    digest.update(str(table.schema.remove_metadata()).encode())
    for batch in table.to_batches():
        for column in batch.columns:
            digest.update(str(column.to_pylist()).encode())
    return digest.hexdigest()


def write_table(table: pa.Table, path: Path) -> bool:
    """Atomically write `table` unless the file already holds the same content. True if
    written."""
    digest = content_hash(table)
    if path.exists():
        try:
            old = pq.read_schema(path).metadata or {}
            if old.get(b"content_sha256", b"").decode() == digest:
                return False
        except (OSError, pa.ArrowInvalid):
            pass
    meta = {
        **(table.schema.metadata or {}),
        b"content_sha256": digest.encode(),
        b"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode(),
    }
    table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True
