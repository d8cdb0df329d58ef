"""Figures of a sweep (PNG): for each swept numeric axis and target, pre and post probe accuracy
and the gap against the axis, one line per head, seed error bars (the shape of [X] Fig. 3);
a pre-versus-post scatter of every trial; few-shot curves (accuracy against labelled examples
per class); and the effective rank of pre and post against each swept axis."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from analysis.tables import HEAD_KEY
from analysis.trials import FINISHED
from headsweep import metrics as M
from headsweep.atomic import write_if_changed

MAX_LINES = 8
FEWSHOT_LINES = 6  # settings drawn apart on a few-shot panel; more are pooled
LABELS = {
    "aug.p_drop": "augmentation drop rate p_drop",
    "data.strength": "digit feature strength s",
    "optim.weight_decay": "weight decay",
    "model.head.kappa": "reweighting κ",
    "loss.mi_lambda": "MI regulariser strength λ",
    "model.head.levels": "FSQ levels L",
    "model.head.k": "top-k active latents",
}


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write (atomically) only when the picture changed, so a re-run leaves files untouched."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    write_if_changed(path, buffer.getvalue())
    return path


def _numeric_axes(gaps: pd.DataFrame, settings: list[str]) -> list[str]:
    axes = []
    for key in settings:
        if key == HEAD_KEY or key not in gaps:
            continue
        values = gaps[key].dropna()
        if values.nunique() >= 2 and pd.api.types.is_numeric_dtype(values):
            axes.append(key)
    return axes


def _curves(left: plt.Axes, right: plt.Axes, line: str) -> list[tuple]:
    """(axes, statistic, marker, line style, legend label) of one line's three curves."""
    return [
        (left, "pre", "o", "-", f"{line} · pre"),
        (left, "post", "s", "--", f"{line} · post"),
        (right, "gap", "o", "-", line),
    ]


def _label_keys(frame: pd.DataFrame, others: list[str]):
    """Which keys name a line: with a head axis, the head plus only the keys that vary among that
    head's own rows (an MLP line is not labelled with the top-k head's k)."""
    if HEAD_KEY not in others:
        return lambda row: others
    varying = {
        head: [k for k in others if k != HEAD_KEY and group[k].nunique(dropna=True) > 1]
        for head, group in frame.groupby(HEAD_KEY)
    }
    return lambda row: [HEAD_KEY, *varying[row[HEAD_KEY]]]


def _line_label(row: pd.Series, keys: list[str]) -> str:
    parts = []
    for key in keys:
        value = row[key]
        if isinstance(value, float) and math.isnan(value):
            continue
        parts.append(
            str(value)
            if key == HEAD_KEY
            else f"{key.split('.')[-1]}={value:g}"
            if isinstance(value, int | float)
            else f"{key.split('.')[-1]}={value}"
        )
    return ", ".join(parts) or "all"


def axis_figures(gaps: pd.DataFrame, settings: list[str], out: Path, sweep: str) -> list[Path]:
    paths = []
    for axis in _numeric_axes(gaps, settings):
        others = [k for k in settings if k != axis]
        for target, frame in gaps.groupby("target", sort=True):
            frame = frame.copy()
            keys_of = _label_keys(frame, others)
            frame["_line"] = frame.apply(lambda r, k=keys_of: _line_label(r, k(r)), axis=1)
            lines = sorted(frame["_line"].unique())
            note = ""
            if len(lines) > MAX_LINES:  # too many combinations: average the other axes
                frame = frame.groupby(axis, as_index=False)[
                    ["pre_mean", "post_mean", "gap_mean", "pre_std", "post_std", "gap_std"]
                ].mean()
                frame["_line"] = "all settings"
                lines, note = ["all settings"], " (averaged over the other axes)"
            fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
            colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
            for i, line in enumerate(lines):
                part = frame[frame["_line"] == line].sort_values(axis)
                colour = colours[i % len(colours)]
                x = part[axis].to_numpy(dtype=float)
                if len(x) == 1 and frame[axis].nunique() > 1:
                    # a setting the axis does not apply to (e.g. the MLP head on a κ axis):
                    # a level to compare against, not a point at an arbitrary x
                    row = part.iloc[0]
                    for ax, stat, _, style, tag in _curves(left, right, line):
                        level, tag = row[f"{stat}_mean"], f"{tag} (not on this axis)"
                        ax.axhline(level, color=colour, linestyle=style, alpha=0.7, label=tag)
                    continue
                for ax, stat, marker, style, tag in _curves(left, right, line):
                    ax.errorbar(
                        x,
                        part[f"{stat}_mean"],
                        yerr=part[f"{stat}_std"].fillna(0),
                        color=colour,
                        marker=marker,
                        linestyle=style,
                        capsize=3,
                        label=tag,
                    )
            label = LABELS.get(axis, axis)
            left.set(
                xlabel=label,
                ylabel=f"{target} probe accuracy",
                title=f"{target}: pre (solid) vs post (dashed)",
            )
            right.axhline(0, color="grey", linewidth=0.8)
            right.set(
                xlabel=label,
                ylabel="gap = pre − post (accuracy)",
                title=f"{target}: pre − post gap, mean ± std over seeds",
            )
            left.legend(fontsize=7, loc="best")
            right.legend(fontsize=7, loc="best")
            fig.suptitle(f"{sweep}{note}", fontsize=10)
            safe = axis.replace(".", "_")
            paths.append(_save(fig, out / f"{target}_vs_{safe}.png"))
    return paths


def scatter_figure(probes: pd.DataFrame, out: Path, sweep: str) -> Path | None:
    paired = probes[probes["tap"].isin(["pre", "post"])]
    if paired.empty:
        return None
    index = ["trial_id", "target"] + ([HEAD_KEY] if HEAD_KEY in paired else [])
    wide = paired.pivot_table(
        index=index, columns="tap", values="accuracy", aggfunc="first"
    ).reset_index()
    targets = sorted(wide["target"].unique())
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=False):
        part = wide[wide["target"] == target]
        groups = part.groupby(HEAD_KEY) if HEAD_KEY in part else [("trials", part)]
        for head, group in groups:
            ax.scatter(group["post"], group["pre"], label=str(head), s=22, alpha=0.8)
        low = float(min(part["pre"].min(), part["post"].min()))
        high = float(max(part["pre"].max(), part["post"].max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set(
            xlabel="post-projection accuracy",
            ylabel="pre-projection accuracy",
            title=f"{target} probe",
        )
        ax.legend(fontsize=7)
    fig.suptitle(f"{sweep}: one point per trial (above the grey line: pre wins)", fontsize=10)
    return _save(fig, out / "pre_vs_post_scatter.png")


def weights_figure(trials: pd.DataFrame, out: Path, sweep: str) -> Path | None:
    """Synthetic theory runs ([X] Thm 3.3): each feature's pre- against post-projection weight on
    log-log axes, one point per trial and feature, coloured by weight decay. Without weight decay
    the points follow pre = sqrt(post), the slope-1/2 line drawn through their centre."""
    pre_cols = M.weight_columns(trials.columns, "pre")
    if not pre_cols:
        return None
    finished = trials[trials["status"] == FINISHED]
    rows = []
    for col in pre_cols:
        k = M.feature_index(col)
        part = finished[[col, M.weight("post", k)]].set_axis(["pre", "post"], axis=1)
        wd = finished.get("weight_decay", 0.0)
        rows.append(part.assign(feature=k, weight_decay=wd))
    points = pd.concat(rows)
    points = points[(points["pre"] > 1e-6) & (points["post"] > 1e-6)]  # log axes
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    for wd, group in points.groupby("weight_decay"):
        ax.scatter(group["post"], group["pre"], s=16, alpha=0.7, label=f"weight decay {wd:g}")
    free = points[points["weight_decay"] == points["weight_decay"].min()]
    cx, cy = free["post"].map(math.log).mean(), free["pre"].map(math.log).mean()
    xs = [points["post"].min(), points["post"].max()]
    ax.plot(xs, [math.exp(cy + 0.5 * (math.log(x) - cx)) for x in xs], "k--", linewidth=0.9)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="post-projection weight of feature k (head layer)",
        ylabel="pre-projection weight of feature k (encoder)",
        title="per-feature weights; dashed: slope 1/2 (pre = √post)",
    )
    ax.legend(fontsize=7)
    fig.suptitle(sweep, fontsize=10)
    return _save(fig, out / "weights_pre_vs_post.png")


def fewshot_figures(table: pd.DataFrame, settings: list[str], out: Path, sweep: str) -> list[Path]:
    """Per target: accuracy against shots per class (log x; "all" at the right end), pre solid
    and post dashed, 95% CI bands; one colour per setting."""
    paths: list[Path] = []
    if table.empty:
        return paths
    frame = table[table["tap"].isin(["pre", "post"])].copy()
    frame["_line"] = frame.apply(lambda r: _line_label(r, settings), axis=1)
    for target, part in frame.groupby("target", sort=True):
        lines = sorted(part["_line"].unique())
        if len(lines) > FEWSHOT_LINES:
            part = _pooled_fewshot(part)
            lines = ["all settings"]
        shots = sorted(s for s in part["shots"].unique() if s > 0)
        # "all" (shots 0) sits one decade-ish right of the largest n so the log axis holds it
        everything = 4 * max(shots) if shots else 1
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, line in enumerate(lines):
            for tap, style, marker in (("pre", "-", "o"), ("post", "--", "s")):
                curve = part[(part["_line"] == line) & (part["tap"] == tap)].copy()
                if curve.empty:
                    continue
                curve["x"] = curve["shots"].where(curve["shots"] > 0, everything)
                curve = curve.sort_values("x")
                colour = colours[i % len(colours)]
                ax.plot(
                    curve["x"],
                    curve["mean"],
                    color=colour,
                    linestyle=style,
                    marker=marker,
                    label=f"{line} · {tap}",
                )
                low, high = (
                    curve["ci_low"].fillna(curve["mean"]),
                    curve["ci_high"].fillna(curve["mean"]),
                )
                ax.fill_between(curve["x"], low, high, color=colour, alpha=0.15)
        ticks = [*shots, everything] if 0 in set(part["shots"]) else shots
        ax.set_xscale("log")
        ax.set_xticks(ticks, [*map(str, shots), "all"][: len(ticks)])
        ax.minorticks_off()
        ax.set(
            xlabel="labelled examples per class",
            ylabel=f"{target} probe accuracy (test split)",
            title=f"{target}: few-shot probe, pre (solid) vs post (dashed), 95% CI",
        )
        ax.legend(fontsize=7, loc="best")
        fig.suptitle(sweep, fontsize=10)
        paths.append(_save(fig, out / f"{target}_fewshot.png"))
    return paths


def _pooled_fewshot(part: pd.DataFrame) -> pd.DataFrame:
    """Too many settings for one panel: the mean of the settings' means (and of their CI
    bounds, a rough band) per tap and shots."""
    pooled = part.groupby(["tap", "shots"], as_index=False)[["mean", "ci_low", "ci_high"]].mean()
    pooled["_line"] = "all settings"
    return pooled


def rank_figures(trials: pd.DataFrame, settings: list[str], out: Path, sweep: str) -> list[Path]:
    """Effective rank (RankMe, rank/<tap> on the test split) of pre and post against each swept
    numeric axis, mean ± std over seeds, one colour per other setting: how many directions
    each side of the head uses where the probes' pre/post gap opens."""
    columns = [M.rank("pre"), M.rank("post")]
    if trials.empty or not set(columns) <= set(trials.columns):
        return []
    finished = trials[trials["status"] == FINISHED]
    keys = [k for k in settings if k in finished]
    if finished.empty or not keys:
        return []
    grouped = finished.groupby(keys, dropna=False)[columns]
    means, stds = grouped.mean(), grouped.std(ddof=1)
    frame = means.join(stds, rsuffix="_std").reset_index()
    paths = []
    for axis in _numeric_axes(frame, keys):
        others = [k for k in keys if k != axis]
        frame["_line"] = frame.apply(lambda r, o=others: _line_label(r, o), axis=1)
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, line in enumerate(sorted(frame["_line"].unique())[:MAX_LINES]):
            part = frame[frame["_line"] == line].sort_values(axis)
            colour = colours[i % len(colours)]
            for column, style, marker, tap in (
                (columns[0], "-", "o", "pre"),
                (columns[1], "--", "s", "post"),
            ):
                if len(part) == 1:  # a setting off this axis (the no-head control): a level
                    level = part[column].iloc[0]
                    ax.axhline(
                        level, color=colour, linestyle=style, alpha=0.7, label=f"{line} · {tap}"
                    )
                    continue
                ax.errorbar(
                    part[axis].to_numpy(dtype=float),
                    part[column],
                    yerr=part[f"{column}_std"].fillna(0),
                    color=colour,
                    linestyle=style,
                    marker=marker,
                    capsize=3,
                    label=f"{line} · {tap}",
                )
        ax.set(
            xlabel=LABELS.get(axis, axis),
            ylabel="effective rank (RankMe), test split",
            title="effective rank: pre (solid) vs post (dashed), mean ± std over seeds",
        )
        ax.legend(fontsize=7, loc="best")
        fig.suptitle(sweep, fontsize=10)
        paths.append(_save(fig, out / f"rank_vs_{axis.replace('.', '_')}.png"))
    return paths
