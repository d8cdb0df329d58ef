"""The figure of `analysis.bounds`, one per target: [O]'s MI bounds and the online probe
accuracy against epochs (one line per trial, [O] Fig. 2), the final bounds against the final
pre-projection probe accuracy (one point per trial, [O] Fig. 3), and the per-trial rank
correlations; one colour per head."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.bounds import BOUNDS, SWEEP, TAPS, TRIAL
from analysis.figures import _save as save_png
from analysis.tables import HEAD_KEY
from headsweep import metrics as M


def bounds_figures(
    bounds: pd.DataFrame, history: pd.DataFrame, out: Path, sweep: str
) -> list[Path]:
    """One figure per target: the bounds and the online accuracy against epochs (one line per
    trial), the final bounds against the final pre probe accuracy (one point per trial), and
    the per-trial rank correlations; one colour per head."""
    trial = bounds[bounds["scope"] == TRIAL] if "scope" in bounds else bounds
    if trial.empty:
        return []
    heads = sorted({str(h) for h in history.get(HEAD_KEY, pd.Series(["all"]))})
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {head: palette[i % len(palette)] for i, head in enumerate(heads)}

    def head_of(frame: pd.DataFrame) -> str:
        return str(frame[HEAD_KEY].iloc[0]) if HEAD_KEY in frame else "all"

    paths = []
    for target in sorted(trial["target"].unique()):
        fig, axes = plt.subplots(2, 3, figsize=(14, 8))
        epochs_panels = [
            (axes[0, 0], M.MI_LOWER, "-", "lower bound"),
            (axes[0, 1], M.MI_UPPER, "-", "upper bound"),
            (axes[0, 2], M.online(target, "pre"), "-", "online pre accuracy"),
            (axes[0, 2], M.online(target, "post"), "--", "online post accuracy"),
        ]
        for _, frame in history.groupby("trial_id", sort=True):
            frame = frame.sort_values("epoch")
            for ax, column, style, _ in epochs_panels:
                ax.plot(frame["epoch"], frame[column], style, color=colour[head_of(frame)], lw=1)
        for ax, column, _, label in epochs_panels:
            ax.set(xlabel="epoch", ylabel=label, title=f"{column} per trial")
        axes[0, 2].set(
            ylabel=f"online {target} probe accuracy",  # pre and post share this panel
            title=f"{target}: online probe, pre (solid) / post (dashed)",
        )
        sweep_rows = bounds[(bounds["scope"] == SWEEP) & (bounds["target"] == target)]
        for ax, bound in ((axes[1, 0], "mi_lower"), (axes[1, 1], "mi_upper")):
            points = trial[(trial["target"] == target) & (trial["bound"] == bound)]
            points = points[points["tap"] == "pre"]
            for head in heads:
                part = points[points[HEAD_KEY] == head] if HEAD_KEY in points else points
                ax.scatter(part["bound_final"], part["accuracy_final"], s=24, color=colour[head])
            ax.set(
                xlabel=f"final {BOUNDS[bound]}",
                ylabel=f"{M.probe(target, 'pre')}",
                title=_across_title(sweep_rows, bound),
            )
        rhos = axes[1, 2]
        for i, (bound, tap) in enumerate((b, t) for b in BOUNDS for t in TAPS):
            part = trial[(trial["target"] == target) & (trial["bound"] == bound)]
            part = part[part["tap"] == tap]
            offsets = np.linspace(-0.2, 0.2, max(len(part), 1))  # fixed spread, no jitter noise
            for offset, (_, row) in zip(offsets, part.iterrows(), strict=False):
                head = str(row[HEAD_KEY]) if HEAD_KEY in part else "all"
                rhos.scatter(i + offset, row["rho"], s=18, color=colour[head])
        rhos.axhline(0, color="grey", linewidth=0.8)
        rhos.set_xticks(range(4), [f"{b}\nvs {t}" for b in BOUNDS for t in TAPS], fontsize=8)
        rhos.set(ylim=(-1.05, 1.05), ylabel="Spearman ρ across epochs", title="per trial")
        handles = [plt.Line2D([], [], color=colour[h], marker="o", label=h) for h in heads]
        fig.legend(handles=handles, loc="upper right", fontsize=8, title="head")
        fig.suptitle(f"{sweep}: [O]'s MI bounds vs {target} accuracy", fontsize=10)
        fig.tight_layout(rect=(0, 0, 0.93, 0.96))
        paths.append(save_png(fig, out / f"bounds_{target}.png"))
    return paths


def _across_title(sweep_rows: pd.DataFrame, bound: str) -> str:
    row = sweep_rows[(sweep_rows["bound"] == bound) & (sweep_rows["tap"] == "pre")]
    if row.empty or not math.isfinite(float(row["rho"].iloc[0])):
        return "across trials: ρ undefined (< 3 trials or constant)"
    r = row.iloc[0]
    ci = (
        f" [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        if math.isfinite(float(r["ci_low"]))
        else " (no CI: n < 4)"
    )
    return f"across trials: ρ = {r['rho']:+.2f}{ci}, n = {r['n']}"
