"""One verdict rule for every trend (docs/science.md §10), and the calibration rule (§9).

Every trend is *held*, *failed* or *inconclusive*. Comparisons use the paired 95% t-interval of
the mean over seeds (at least `MIN_SEEDS`); accuracies are fractions, so 3 points = 0.03. Each
claim is judged by where its interval lies (a `Claim`):

| claim | held when the interval | failed when it lies wholly |
|---|---|---|
| "above" / "below" 0 | lies above / below 0 | below / above 0 |
| "clear margin" | has its lower end >= 3 points | under 3 points (upper end < 3) |
| "comparable" | lies within ±3 points | below −3 or above +3 points |
| "not worse" | has its lower end >= −3 points | below −3 points |

Anything else (an interval that straddles the tolerance) is *inconclusive*, with the number of
seeds that would resolve it at the observed spread. A trend is also *inconclusive*, never held
or failed, when the instrument could not show it: too few seeds, a judged accuracy at the
ceiling (> 0.97), or a control that did not learn the digit (the encoder with no head at
p_drop 0 must probe the digit at >= 0.6). The thresholds are fixed here, before any run, and
never fitted to results.
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


@dataclass(frozen=True)
class Claim:
    """Where an interval lies against one claim: HELD, FAILED (wholly on the wrong side of the
    tolerance) or INCONCLUSIVE, with what would resolve it."""

    outcome: str
    note: str = ""

    def __bool__(self) -> bool:  # "does the interval support the claim"
        return self.outcome == HELD


MAX_SEEDS = 1000  # seeds_to_resolve looks no further


def seeds_to_resolve(iv: Interval, boundary: float) -> int | None:
    """The fewest seeds whose 95% half-width, at this interval's spread, is less than the mean's
    distance to `boundary`; None without a spread (n < 2) or beyond MAX_SEEDS."""
    if iv.n < 2 or not math.isfinite(iv.low):
        return None
    sd = (iv.high - iv.low) / 2 / float(stats.t.ppf(0.975, iv.n - 1)) * math.sqrt(iv.n)
    distance = abs(iv.mean - boundary)
    for n in range(iv.n + 1, MAX_SEEDS + 1):
        if float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) < distance:
            return n
    return None


def _claim(iv: Interval, held: bool, failed: bool, boundary: float) -> Claim:
    if held:
        return Claim(HELD)
    if failed:
        return Claim(FAILED)
    if iv.n < 2 or not math.isfinite(iv.low):
        return Claim(INCONCLUSIVE, "no interval")
    n = seeds_to_resolve(iv, boundary)
    where = f"{boundary * 100:+g} pts" if boundary else "0"
    need = f"~{n} seeds would resolve it" if n else f"more than {MAX_SEEDS} seeds"
    return Claim(INCONCLUSIVE, f"interval straddles {where} ({need} at this spread)")


def above(iv: Interval) -> Claim:
    return _claim(iv, iv.low > 0, iv.high < 0, 0.0)


def below(iv: Interval) -> Claim:
    return _claim(iv, iv.high < 0, iv.low > 0, 0.0)


def clear_margin(iv: Interval) -> Claim:
    return _claim(iv, iv.low >= MARGIN, iv.high < MARGIN, MARGIN)


def comparable(iv: Interval) -> Claim:
    outside = iv.low > MARGIN or iv.high < -MARGIN
    nearest = MARGIN if iv.mean >= 0 else -MARGIN
    return _claim(iv, iv.low >= -MARGIN and iv.high <= MARGIN, outside, nearest)


def not_worse(iv: Interval) -> Claim:
    return _claim(iv, iv.low >= -MARGIN, iv.high < -MARGIN, -MARGIN)


def every(claims: Iterable[Claim]) -> Claim:
    """All of several claims: failed if any is, inconclusive if any is (their notes), else
    held."""
    claims = list(claims)
    for outcome in (FAILED, INCONCLUSIVE):
        notes = [c.note for c in claims if c.outcome == outcome and c.note]
        if any(c.outcome == outcome for c in claims):
            return Claim(outcome, "; ".join(dict.fromkeys(notes)))
    return Claim(HELD)


def either(*claims: Claim) -> Claim:
    """Any one of several ways to hold a claim: held if one holds, failed if all fail."""
    if any(c.outcome == HELD for c in claims):
        return Claim(HELD)
    if all(c.outcome == FAILED for c in claims):
        return Claim(FAILED)
    return Claim(INCONCLUSIVE, "; ".join(c.note for c in claims if c.note))


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
    conditions: Sequence[tuple[str, Claim | bool]],
    evidence: str,
    guards: Sequence[str] = (),
) -> Verdict:
    """Inconclusive if any guard is raised (a reason the instrument cannot show the trend);
    else failed when any condition's interval lies wholly on the wrong side (naming them),
    inconclusive when any is unresolved (naming them and what would resolve them), held when
    every condition holds. A bool condition is exact (no interval): True holds, False fails."""
    if guards:
        return Verdict(name, INCONCLUSIVE, evidence, "; ".join(guards))
    claims = [
        (text, c if isinstance(c, Claim) else Claim(HELD if c else FAILED))
        for text, c in conditions
    ]
    failed = [text for text, c in claims if c.outcome == FAILED]
    if failed:
        return Verdict(name, FAILED, evidence, "not: " + "; ".join(failed))
    open_ = [f"{text}: {c.note}" if c.note else text for text, c in claims if c.outcome != HELD]
    if open_:
        return Verdict(name, INCONCLUSIVE, evidence, "not resolved: " + "; ".join(open_))
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


def calibration_guard(probes: pd.DataFrame, separate: Calibration | None = None) -> list[str]:
    """Digit experiments need a control that learned the digit (§9): the sweep's own control
    (head none, p_drop 0) when it has one, else `separate`, the same control trained on its own
    before the sweep (`headsweep calibrate`, as `headsweep reproduce` does for the sweeps whose
    grid holds no control: weight decay, the bottleneck heads)."""
    if "digit" not in set(probes["target"]):
        return []
    own = calibrate(probes, ["digit"])
    return separate.guard() if own.ok is None and separate is not None else own.guard()
