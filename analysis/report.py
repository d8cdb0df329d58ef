"""A sweep's analysis from its trials: the Parquet tables, the figures, the trend verdicts and
`summary.md`, written to one directory, and the gap table as text. Pure: the trials come from
the caller (`sweeps.results` reads them from Tune and MLflow and logs the outputs to the
sweep's parent run). Idempotent: a second run rewrites nothing whose content is unchanged."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.bounds_figure import bounds_figures
from analysis.figures import (
    axis_figures,
    fewshot_figures,
    rank_figures,
    scatter_figure,
    weights_figure,
)
from analysis.groups import pre_post_lines
from analysis.parquet import write_table
from analysis.tables import HEAD_KEY, build_tables, usable
from analysis.trends import check
from analysis.trials import FAILED, FINISHED, UNREADABLE, Trial
from analysis.verdicts import Calibration, Verdict, calibrate
from headsweep import metrics as M
from headsweep.atomic import write_if_changed
from headsweep.health import OK, UNMEASURED

TABLES = ("trials", "probes", "gaps", "history", "bounds", "groups", "fewshot")
GAPS_CSV = "gaps.csv"  # the gap table as text: MLflow's artifact view previews it

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
    groups: pd.DataFrame = field(default_factory=pd.DataFrame)  # groups.parquet (may be empty)
    health: dict[str, str] = field(default_factory=dict)  # finished trial id -> its health
    unreadable: dict[str, str] = field(default_factory=dict)  # trial id -> path and why

    def unreadable_line(self) -> str:
        """The finished trials whose record no copy of could be read (not analysed)."""
        if not self.unreadable:
            return ""
        return "record unreadable, not analysed: " + "; ".join(
            f"{t} ({why})" for t, why in self.unreadable.items()
        )

    def health_line(self) -> str:
        """How many finished trials trained (docs/science.md §11), naming those that did not;
        "" when no trial recorded its health."""
        measured = {t: h for t, h in self.health.items() if h != UNMEASURED}
        if not measured:
            return ""
        sick = {t: h for t, h in measured.items() if h != OK}
        text = f"health: {len(measured) - len(sick)} of {len(measured)} trials trained"
        if sick:
            text += "; not averaged: " + "; ".join(f"{t} ({h})" for t, h in sick.items())
        return text

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

    def terminal_table(self, target: str | None = None, verdicts: bool = True) -> str:
        """The gap table; with `target`, only its rows (the others are in summary.md); the
        verdict lines after it unless `verdicts` is False (the CLI prints them last)."""
        gaps = self.gaps
        if target and target in set(gaps.get("target", ())):
            gaps = gaps[gaps["target"] == target]
        text = gap_table_text(gaps, self.settings, self.message)
        text += "".join(f"\n{line}" for line in self.group_lines(markdown=False))
        return text + self.verdict_text() if verdicts else text

    def group_lines(self, markdown: bool) -> list[str]:
        """Average and worst-group accuracy of pre and post (data with groups), else []."""
        return pre_post_lines(self.groups, self.settings, _short, markdown)

    def verdict_text(self) -> str:
        """Calibration and trend verdicts, one line each (empty when none apply)."""
        lines = [x for x in (self.unreadable_line(), self.health_line()) if x]
        lines += [self.calibration.line()] if self.calibration else []
        lines += [v.line() for v in self.verdicts]
        return "".join(f"\n{line}" for line in lines)

    def headline(self) -> str:
        """One sentence with the answer: the largest mean gap, where, with its CI."""
        if self.gaps.empty or self.gaps["gap_mean"].isna().all():
            return ""
        top = self.gaps.loc[self.gaps["gap_mean"].idxmax()]
        where = " ".join(f"{_short(k)}={_value(top[k])}" for k in self.settings)
        ci = _ci(top)
        interval = f"95% CI {ci}" if ci.startswith("[") else "one seed, no CI"
        return (
            f"**Largest gap: pre − post = {top['gap_mean']:+.3f} on {top['target']}** "
            f"({interval}; pre {top['pre_mean']:.3f}, post {top['post_mean']:.3f}, "
            f"n={top['n']}) at {where or 'the base config'}."
        )

    def markdown(self) -> str:
        headline = self.headline()
        lines = [
            f"# {self.sweep}: pre- vs post-projection probe accuracy",
            "",
            *([headline, ""] if headline else []),
            f"{self.message}. Gap = pre − post, mean over seeds with std and a paired "
            "95% t-interval.",
            "",
        ]
        for line in (self.unreadable_line(), self.health_line()):
            lines += [f"- {line}", ""] if line else []
        if self.calibration or self.verdicts:
            if self.calibration:
                lines.append(f"- {self.calibration.line()}")
            lines += [f"- {v.line()}" for v in self.verdicts]
            lines.append("")
        if self.gaps.empty:
            return "\n".join(lines) + "\n"
        group_lines = self.group_lines(markdown=True)
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
        if group_lines:
            lines += ["", *group_lines]
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


def headline(summary: Summary) -> tuple[dict[str, float], dict[str, str]]:
    """The parent run's headline metrics (max and mean gap and best pre accuracy per target,
    trials by status) and tags (the setting of each target's largest gap)."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for target, frame in summary.gaps.groupby("target"):
        top = frame.loc[frame["gap_mean"].idxmax()]
        metrics[M.gap_summary(str(target), "max")] = float(top["gap_mean"])
        metrics[M.gap_summary(str(target), "mean")] = float(frame["gap_mean"].mean())
        metrics[M.best_pre(str(target))] = float(frame["pre_mean"].max())
        tags[f"headsweep.max_gap.{target}"] = json.dumps(
            {k: _value(top[k]) for k in summary.settings}
        )
    metrics.update({M.trial_count(k): float(v) for k, v in summary.counts.items()})
    return metrics, tags


def analyze(
    sweep: str,
    trials: list[Trial],
    directory: Path,
    *,
    experiment: str,
    seed_key: str,
    meta: Mapping[str, str],
    separate: Calibration | None = None,
) -> Summary:
    """Tabulate, draw and judge one sweep (finished, running, or all failed) into `directory`:
    the four tables, the figures and summary.md. `experiment` picks the trend checks (the spec
    name a sweep ran); `meta` goes into every table's metadata. `separate`: the calibration
    control trained before the sweep (`headsweep reproduce` records it), which judges a sweep
    whose grid holds no control of its own and is then the calibration shown."""
    tables = build_tables(sweep, trials, meta, seed_key)
    for table_name, table in tables.items():
        write_table(table, directory / f"{table_name}.parquet")
    settings = json.loads(tables["gaps"].schema.metadata[b"settings"])
    gaps = tables["gaps"].to_pandas()
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    probes = tables["probes"].to_pandas()
    trials_frame = tables["trials"].to_pandas()
    figures = axis_figures(gaps, settings, directory / "figures", sweep)
    scatter = scatter_figure(probes, directory / "figures", sweep)
    weights = weights_figure(trials_frame, directory / "figures", sweep)
    extra = [path for path in (scatter, weights) if path]
    extra += bounds_figures(
        tables["bounds"].to_pandas(), tables["history"].to_pandas(), directory / "figures", sweep
    )
    extra += fewshot_figures(tables["fewshot"].to_pandas(), settings, directory / "figures", sweep)
    extra += rank_figures(trials_frame, settings, directory / "figures", sweep)
    verdicts = check(experiment, probes, trials_frame, separate)
    calibration = (
        calibrate(usable(probes)) if not probes.empty and "digit" in set(probes["target"]) else None
    )
    if separate is not None and (calibration is None or calibration.ok is None):
        calibration = separate
    summary = Summary(
        sweep,
        directory,
        settings,
        counts,
        gaps,
        figures + extra,
        verdicts,
        calibration,
        groups=tables["groups"].to_pandas(),
        health={str(r.trial_id): str(r.health) for r in trials_frame.itertuples() if r.health},
        unreadable={t.trial_id: t.error or "" for t in trials if t.status == UNREADABLE},
    )
    write_if_changed(directory / "summary.md", summary.markdown().encode())
    write_if_changed(directory / GAPS_CSV, gaps.to_csv(index=False, float_format="%.6g").encode())
    return summary


def compare_text(
    a: str,
    gaps_a: pd.DataFrame,
    settings_a: list[str],
    b: str,
    gaps_b: pd.DataFrame,
    settings_b: list[str],
) -> str:
    """The gap tables of two sweeps side by side, joined on their shared setting columns."""
    keys = [k for k in settings_a if k in settings_b] + ["target"]
    cols = ["pre_mean", "post_mean", "gap_mean", "n"]
    merged = gaps_a[keys + cols].merge(
        gaps_b[keys + cols], on=keys, how="outer", suffixes=(" A", " B")
    )
    merged["gap B - A"] = merged["gap_mean B"] - merged["gap_mean A"]
    merged = merged.rename(columns={k: _short(k) for k in keys})
    table = merged.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return f"A = {a}\nB = {b}\n{table}"
