"""`headsweep analyze`: collect a sweep, write its tables and figures, log them to the sweep's
MLflow parent run, and print the gap table. Idempotent: a second run rewrites nothing whose
content is unchanged, overwrites artifacts in place and logs a parent metric only when its
value changed."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from analysis.collect import FAILED, FINISHED, collect
from analysis.figures import axis_figures, scatter_figure, weights_figure
from analysis.tables import HEAD_KEY, build_tables, write_table
from analysis.trends import check
from analysis.verdicts import Calibration, Verdict, calibrate

log = logging.getLogger(__name__)


@dataclass
class Summary:
    sweep: str
    directory: Path
    settings: list[str]
    counts: dict[str, int]
    gaps: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)  # the trends this experiment checks
    calibration: Calibration | None = None  # digit experiments only

    @property
    def message(self) -> str:
        done = self.counts.get(FINISHED, 0)
        total = sum(self.counts.values())
        if total == 0:
            return "no trials stored yet"
        if done == 0:
            return (
                f"no finished trials ({self.counts.get(FAILED, 0)} failed of {total}): the "
                "tables hold the failed trials with their errors"
            )
        return f"{done} of {total} trials finished"

    def terminal_table(self, target: str | None = None) -> str:
        """The gap table; with `target`, only its rows (the others are in summary.md)."""
        gaps = self.gaps
        if target and target in set(gaps.get("target", ())):
            gaps = gaps[gaps["target"] == target]
        return gap_table_text(gaps, self.settings, self.message) + self.verdict_text()

    def verdict_text(self) -> str:
        """Calibration and trend verdicts, one line each (empty when none apply)."""
        lines = [self.calibration.line()] if self.calibration else []
        lines += [v.line() for v in self.verdicts]
        return "".join(f"\n{line}" for line in lines)

    def markdown(self) -> str:
        lines = [
            f"# {self.sweep}: pre- vs post-projection probe accuracy",
            "",
            f"{self.message}. Gap = pre − post, mean over seeds with std and a paired "
            "95% t-interval.",
            "",
        ]
        if self.calibration or self.verdicts:
            if self.calibration:
                lines.append(f"- {self.calibration.line()}")
            lines += [f"- {v.line()}" for v in self.verdicts]
            lines.append("")
        if self.gaps.empty:
            return "\n".join(lines) + "\n"
        header = [
            *(_short(k) for k in self.settings),
            "target",
            "n",
            "pre",
            "post",
            "gap",
            "95% CI",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, row in self.gaps.iterrows():
            cells = [
                *(_value(row[k]) for k in self.settings),
                row["target"],
                str(row["n"]),
                _pm(row["pre_mean"], row["pre_std"]),
                _pm(row["post_mean"], row["post_std"]),
                _pm(row["gap_mean"], row["gap_std"], signed=True),
                _ci(row),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _short(key: str) -> str:
    return "head" if key == HEAD_KEY else key.split(".")[-1]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:g}"
    return str(value)


def _pm(mean: float, std: float, signed: bool = False) -> str:
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return (
        text
        if std is None or (isinstance(std, float) and math.isnan(std))
        else (f"{text} ± {std:.3f}")
    )


def _ci(row: pd.Series) -> str:
    if isinstance(row["gap_ci_low"], float) and math.isnan(row["gap_ci_low"]):
        return "n=1"
    return f"[{row['gap_ci_low']:+.3f}, {row['gap_ci_high']:+.3f}]"


def gap_table_text(gaps: pd.DataFrame, settings: list[str], message: str) -> str:
    if gaps.empty:
        return message
    rows = [
        [
            *(_value(r[k]) for k in settings),
            r["target"],
            str(r["n"]),
            _pm(r["pre_mean"], r["pre_std"]),
            _pm(r["post_mean"], r["post_std"]),
            _pm(r["gap_mean"], r["gap_std"], signed=True),
            _ci(r),
        ]
        for _, r in gaps.iterrows()
    ]
    header = [*(_short(k) for k in settings), "target", "n", "pre", "post", "gap", "95% CI"]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [message, fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def _headline(gaps: pd.DataFrame, settings: list[str]) -> tuple[dict[str, float], dict]:
    metrics, tags = {}, {}
    for target, frame in gaps.groupby("target"):
        top = frame.loc[frame["gap_mean"].idxmax()]
        metrics[f"gap/{target}/max"] = float(top["gap_mean"])
        metrics[f"gap/{target}/mean"] = float(frame["gap_mean"].mean())
        metrics[f"pre/{target}/best"] = float(frame["pre_mean"].max())
        tags[f"headsweep.max_gap.{target}"] = json.dumps({k: _value(top[k]) for k in settings})
    return metrics, tags


def _log_to_parent(tracker: Any, parent: Any, directory: Path, summary: Summary) -> None:
    client, run_id = tracker.client, parent.info.run_id
    for name in ("trials", "probes", "gaps", "history"):
        client.log_artifact(run_id, str(directory / f"{name}.parquet"), "analysis/tables")
    for path in summary.figures:
        client.log_artifact(run_id, str(path), "analysis/figures")
    client.log_artifact(run_id, str(directory / "summary.md"), "analysis")
    metrics, tags = _headline(summary.gaps, summary.settings)
    metrics.update({f"trials/{k}": float(v) for k, v in summary.counts.items()})
    current = client.get_run(run_id).data
    for key, value in metrics.items():
        if not math.isfinite(value):
            continue
        if key not in current.metrics or not math.isclose(current.metrics[key], value):
            client.log_metric(run_id, key, value)  # only on change: no duplicate history
    for key, value in tags.items():
        if current.tags.get(key) != value:
            client.set_tag(run_id, key, value)


def analyze_sweep(name: str, loc: Any, log_to_mlflow: bool = True) -> Summary:
    """Collect, tabulate, draw and log one sweep (finished, running, or all failed)."""
    from sweeps.driver import SweepError

    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    if parent is None:
        raise SweepError(f"no sweep named {name!r} in {loc.tracking_uri} (see `headsweep list`)")
    tags = parent.data.tags
    path = f"{tags['headsweep.storage'].rstrip('/')}/{name}"
    records = collect(path, tags["headsweep.trainable"], tracker, parent)
    meta = {
        "sweep": name,
        "spec_hash": tags.get("headsweep.spec_hash", ""),
        "git_revision": tags.get("mlflow.source.git.commit", "unknown"),
        "experiment_path": path,
    }
    tables = build_tables(name, records, meta)
    directory = loc.tables(name)
    for table_name, table in tables.items():
        write_table(table, directory / f"{table_name}.parquet")
    settings = json.loads(tables["gaps"].schema.metadata[b"settings"])
    gaps = tables["gaps"].to_pandas()
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    figures = axis_figures(gaps, settings, directory / "figures", name)
    scatter = scatter_figure(tables["probes"].to_pandas(), directory / "figures", name)
    weights = weights_figure(tables["trials"].to_pandas(), directory / "figures", name)
    extra = [path for path in (scatter, weights) if path]
    probes = tables["probes"].to_pandas()
    experiment = tracker.client.get_experiment(parent.info.experiment_id).name
    verdicts = check(experiment, probes, tables["trials"].to_pandas())
    calibration = (
        calibrate(probes) if not probes.empty and "digit" in set(probes["target"]) else None
    )
    summary = Summary(
        name, directory, settings, counts, gaps, figures + extra, verdicts, calibration
    )
    markdown = summary.markdown()
    md_path = directory / "summary.md"
    if not md_path.exists() or md_path.read_text() != markdown:
        md_path.write_text(markdown)
    if log_to_mlflow:
        _log_to_parent(tracker, parent, directory, summary)
    return summary


def read_gaps(name: str, loc: Any) -> tuple[pd.DataFrame, list[str]]:
    path = loc.tables(name) / "gaps.parquet"
    if not path.exists():
        analyze_sweep(name, loc)
    table = pq.read_table(path)
    return table.to_pandas(), json.loads(table.schema.metadata[b"settings"])


def compare_sweeps(a: str, b: str, loc: Any) -> str:
    """The gap tables of two sweeps side by side, joined on their shared setting columns."""
    gaps_a, settings_a = read_gaps(a, loc)
    gaps_b, settings_b = read_gaps(b, loc)
    keys = [k for k in settings_a if k in settings_b] + ["target"]
    cols = ["pre_mean", "post_mean", "gap_mean", "n"]
    merged = gaps_a[keys + cols].merge(
        gaps_b[keys + cols], on=keys, how="outer", suffixes=(" A", " B")
    )
    merged["gap B - A"] = merged["gap_mean B"] - merged["gap_mean A"]
    merged = merged.rename(columns={k: _short(k) for k in keys})
    table = merged.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return f"A = {a}\nB = {b}\n{table}"
