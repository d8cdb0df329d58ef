"""One verdict rule for every trend (docs/science.md §10), and the calibration rule (§9).

Every trend is *held*, *failed* or *inconclusive*. Comparisons use the paired 95% t-interval of
the mean over seeds (at least `MIN_SEEDS`); accuracies are fractions, so 3 points = 0.03:

- "comparable": the interval of the difference lies within ±3 points;
- "clear margin": the mean difference is at least 3 points and its interval lies above 0;
- "above" / "below": the interval lies above / below 0;
- "not worse": the interval's lower end is above −3 points.

A trend is *inconclusive*, never held or failed, when the instrument could not show it: too few
seeds, a judged accuracy at the ceiling (> 0.97), or a control that did not learn the digit
(the encoder with no head at p_drop 0 must probe the digit at >= 0.6). The thresholds are fixed
here, before any run, and never fitted to results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

HELD, FAILED, INCONCLUSIVE = "held", "failed", "inconclusive"
MIN_SEEDS = 3
MARGIN = 0.03  # "comparable" half-width and "clear margin" size, in accuracy (3 points)
SMALL = 0.02  # T6's "small" gap at p_drop 0 (or below a third of the largest gap)
CEILING = 0.97  # a judged accuracy above this cannot move: inconclusive
CONTROL_FLOOR = 0.6  # the no-head control's digit probe must reach this

HEAD = "model.head.name"
P_DROP = "aug.p_drop"
EPOCHS = "train.epochs"


@dataclass(frozen=True)
class Interval:
    """Mean and paired 95% t-interval of per-seed values."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, scale: float = 100.0, unit: str = " pts", digits: int = 1) -> str:
        """`digits` decimals: one for accuracy points; unitless quantities such as a log-log
        slope near 0.5 need three (at one, +0.5 [+0.5, +0.5] hides the interval)."""
        f = f"+.{digits}f"
        if self.n < 2:
            return f"{self.mean * scale:{f}}{unit} (n={self.n})"
        return (
            f"{self.mean * scale:{f}}{unit} [{self.low * scale:{f}}, {self.high * scale:{f}}]"
            f" (n={self.n})"
        )


def interval(values: Iterable[float]) -> Interval:
    """The 95% t-interval of the mean of `values` (NaNs dropped); bounds are NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if n == 1:
        return Interval(float(x[0]), math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(float(x.mean()), float(x.mean() - half), float(x.mean() + half), n)


def above(iv: Interval) -> bool:
    return iv.low > 0


def below(iv: Interval) -> bool:
    return iv.high < 0


def clear_margin(iv: Interval) -> bool:
    return iv.mean >= MARGIN and iv.low > 0


def comparable(iv: Interval) -> bool:
    return iv.low >= -MARGIN and iv.high <= MARGIN


def not_worse(iv: Interval) -> bool:
    return iv.low >= -MARGIN


@dataclass(frozen=True)
class Verdict:
    """One trend's outcome, the numbers it was judged on, and why (for failed/inconclusive)."""

    name: str
    outcome: str  # held | failed | inconclusive
    evidence: str
    reason: str = ""

    @property
    def holds(self) -> bool:
        return self.outcome == HELD

    def line(self) -> str:
        why = f"; {self.reason}" if self.reason else ""
        return f"{self.name}: {self.outcome.upper()} ({self.evidence}{why})"


def judge(
    name: str,
    conditions: Sequence[tuple[str, bool]],
    evidence: str,
    guards: Sequence[str] = (),
) -> Verdict:
    """Inconclusive if any guard is raised (a reason the instrument cannot show the trend),
    else held when every condition holds, failed naming the conditions that did not."""
    if guards:
        return Verdict(name, INCONCLUSIVE, evidence, "; ".join(guards))
    missed = [text for text, ok in conditions if not ok]
    if missed:
        return Verdict(name, FAILED, evidence, "not: " + "; ".join(missed))
    return Verdict(name, HELD, evidence)


def seeds_guard(counts: Iterable[int]) -> list[str]:
    """A guard when any compared setting has fewer than MIN_SEEDS seeds."""
    counts = list(counts)
    fewest = min(counts) if counts else 0
    return [] if fewest >= MIN_SEEDS else [f"{fewest} seed(s) per setting (need >= {MIN_SEEDS})"]


def ceiling_guard(frame: pd.DataFrame, columns: Sequence[str], label: str) -> list[str]:
    """A guard when a setting's mean accuracy in any of `columns` is above CEILING."""
    worst = max((float(frame[c].max()) for c in columns if c in frame and len(frame)), default=0)
    if worst > CEILING:
        return [f"{label} at ceiling ({worst:.3f} > {CEILING})"]
    return []


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Whether the instrument can judge a trend: `ok` None when the sweep holds no control."""

    ok: bool | None
    evidence: str
    problems: tuple[str, ...] = ()

    def guard(self) -> list[str]:
        if self.ok is None:
            return [f"not calibrated: {self.evidence}"]
        return [f"not calibrated: {p}" for p in self.problems]

    def line(self) -> str:
        state = {True: "PASS", False: "FAIL", None: "NO CONTROL"}[self.ok]
        detail = "; ".join(self.problems)
        return f"calibration: {state} ({self.evidence}{'; ' + detail if detail else ''})"


def control_rows(probes: pd.DataFrame) -> pd.DataFrame:
    """The calibration control: head `none`, p_drop 0 (where swept), trained (epochs > 0)."""
    rows = probes[probes[HEAD] == "none"] if HEAD in probes else probes.iloc[:0]
    if P_DROP in rows:
        rows = rows[rows[P_DROP] == 0]
    if EPOCHS in rows:
        rows = rows[rows[EPOCHS] > 0]
    return rows


def calibrate(probes: pd.DataFrame, targets: Sequence[str] | None = None) -> Calibration:
    """The calibration rule on a probes table (one row per trial x tap x target): the control
    (no head, p_drop 0) must learn the digit (mean pre probe >= CONTROL_FLOOR) where the data
    has one, and no target's mean control accuracy may exceed CEILING."""
    rows = control_rows(probes)
    rows = rows[rows["tap"] == "pre"]
    if rows.empty:
        return Calibration(None, "no control trial (head none, p_drop 0) in the sweep")
    targets = list(targets) if targets is not None else sorted(set(rows["target"]))
    seeds = rows["trial_id"].nunique()
    means = {t: float(rows[rows["target"] == t]["accuracy"].mean()) for t in targets}
    means = {t: m for t, m in means.items() if math.isfinite(m)}
    problems = []
    if "digit" in means and means["digit"] < CONTROL_FLOOR:
        problems.append(f"control learned no digit (probe {means['digit']:.3f} < {CONTROL_FLOOR})")
    problems += [f"{t} at ceiling ({m:.3f} > {CEILING})" for t, m in means.items() if m > CEILING]
    text = ", ".join(f"{t} {m:.3f}" for t, m in means.items())
    evidence = f"control pre probe over {seeds} trial(s): {text}"
    return Calibration(not problems, evidence, tuple(problems))
