"""The image-experiment trends of docs/science.md §6 (T6-T12) as checks on a sweep's tables,
each returning a three-valued `Verdict` under the one rule of `analysis.verdicts` (§10).

Every check compares pre and post of the same model, pairs over seeds, and is guarded: fewer
than three seeds, a judged accuracy at the ceiling, or a control that learned no digit make it
*inconclusive*. The synthetic trends (T1-T5) are in `analysis.trends_synthetic`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from analysis.paired import (
    by_seed,
    paired,
    paired_diff,
    seed_slopes,
    trained_rows,
    untrained_rows,
)
from analysis.tables import usable
from analysis.trends_bottleneck import bottleneck_checks
from analysis.trends_synthetic import SYNTHETIC_CHECKS
from analysis.verdicts import (
    FAILED,
    HEAD,
    HELD,
    INCONCLUSIVE,
    P_DROP,
    Calibration,
    Claim,
    Verdict,
    above,
    below,
    calibration_guard,
    ceiling_guard,
    clear_margin,
    comparable,
    either,
    every,
    interval,
    judge,
    not_worse,
    seeds_guard,
)

KAPPA = "model.head.kappa"
WEIGHT_DECAY = "optim.weight_decay"


def t6_gap_grows_with_drop_rate(
    probes: pd.DataFrame, head: str = "mlp", calibration: Calibration | None = None
) -> Verdict:
    """T6: at p_drop 0 the digit gap is small (its interval within ±3 points, or the gap under
    a third of the largest gap with intervals apart); for every p_drop > 0 pre > post (gap
    interval above 0); the gap grows: gap(largest p) - gap(0) by a clear margin, and the
    per-seed slope of gap against p_drop has its interval above 0."""
    wide = trained_rows(paired(probes, "digit"))
    wide = wide[wide[HEAD] == head]
    if wide.empty or 0.0 not in set(wide[P_DROP]):
        return judge("T6", [], f"{head}: no trials at p_drop 0", ["p_drop 0 not in the sweep"])
    ps = sorted(set(wide[P_DROP]))
    gaps = {p: by_seed(wide[wide[P_DROP] == p], "gap") for p in ps}
    ivs = {p: interval(g.to_numpy()) for p, g in gaps.items()}
    largest = max((iv.mean for p, iv in ivs.items() if p > 0), default=math.nan)
    growth = paired_diff(gaps[ps[-1]], gaps[0.0])
    slope = seed_slopes(wide, P_DROP, "gap")
    means = wide.groupby(P_DROP)[["pre", "post"]].mean()
    guards = [
        *seeds_guard(len(g) for g in gaps.values()),
        *ceiling_guard(means, ["pre", "post"], "digit probe"),
        *calibration_guard(probes, calibration),
    ]
    # "small" (§10): the interval within ±3 points, or the gap under a third of the largest
    # gap with intervals that do not overlap
    top = max((p for p in ps if p > 0), key=lambda p: ivs[p].mean, default=0.0)
    apart = ivs[0.0].high < ivs[top].low
    third = Claim(HELD if abs(ivs[0.0].mean) < largest / 3 and apart else FAILED)
    conditions = [
        ("gap at p_drop 0 small", either(comparable(ivs[0.0]), third)),
        ("pre > post at every p_drop > 0", every(above(iv) for p, iv in ivs.items() if p > 0)),
        (f"gap(p={ps[-1]:g}) - gap(0) by a clear margin", clear_margin(growth)),
        ("slope of gap against p_drop above 0", above(slope)),
    ]
    text = ", ".join(f"p={p:g}: {iv.text()}" for p, iv in ivs.items())
    evidence = (
        f"{head} digit gap {text}; growth {growth.text()}; slope per unit p_drop {slope.text()}"
    )
    return judge("T6", conditions, evidence, guards)


def t7_gap_shrinks_with_weight_decay(
    probes: pd.DataFrame, head: str = "mlp", calibration: Calibration | None = None
) -> Verdict:
    """T7: the digit gap shrinks as weight decay grows: the per-seed slope of the gap against
    log10(weight decay) (non-zero values) has its interval below 0. Inconclusive when there is
    no gap to shrink (the gap at the smallest decay is not above 0)."""
    wide = trained_rows(paired(probes, "digit"))
    wide = wide[wide[HEAD] == head]
    decays = sorted(set(wide[WEIGHT_DECAY])) if len(wide) else []
    gaps = {w: by_seed(wide[wide[WEIGHT_DECAY] == w], "gap") for w in decays}
    ivs = {w: interval(g.to_numpy()) for w, g in gaps.items()}
    slope = seed_slopes(wide, WEIGHT_DECAY, "gap", log_x=True)
    means = wide.groupby(WEIGHT_DECAY)[["pre", "post"]].mean()
    guards = [
        *seeds_guard(len(g) for g in gaps.values()),
        *ceiling_guard(means, ["pre", "post"], "digit probe"),
        *calibration_guard(probes, calibration),
    ]
    # one seed has no interval: the seeds guard says why, not a gap that is not there
    if decays and ivs[decays[0]].n >= 2 and not above(ivs[decays[0]]):
        guards.append(f"no gap to shrink at weight decay {decays[0]:g}")
    text = ", ".join(f"wd={w:g}: {iv.text()}" for w, iv in ivs.items())
    evidence = f"{head} digit gap {text}; slope per decade {slope.text()}"
    return judge("T7", [("slope of gap per decade below 0", below(slope))], evidence, guards)


def t8_reweighting(probes: pd.DataFrame, calibration: Calibration | None = None) -> Verdict:
    """T8: kappa = 1 gives pre = post exactly (every trial); every kappa > 1 gives a mean
    digit gap >= 0 whose interval is not below 0; the best kappa's pre accuracy is not worse
    than the MLP head's by more than 3 points (paired interval). The untrained-encoder gap at
    each kappa (train.epochs = 0 trials) is reported beside the trained one: a fixed
    reweighting makes an L2 probe prefer pre even without training (§9)."""
    wide = paired(probes, "digit")
    trained, untrained = trained_rows(wide), untrained_rows(wide)
    reweight = trained[trained[HEAD] == "fixed_reweight"]
    identity = reweight[reweight[KAPPA] == 1.0]
    exact = bool(len(identity) and (identity["gap"].abs() < 1e-6).all())
    kappas = sorted(k for k in set(reweight[KAPPA]) if k > 1.0)
    gaps = {k: by_seed(reweight[reweight[KAPPA] == k], "gap") for k in kappas}
    ivs = {k: interval(g.to_numpy()) for k, g in gaps.items()}
    pre = {k: by_seed(reweight[reweight[KAPPA] == k], "pre") for k in kappas}
    mlp = by_seed(trained[trained[HEAD] == "mlp"], "pre")
    best = max(kappas, key=lambda k: pre[k].mean()) if kappas else None
    versus = paired_diff(pre[best], mlp) if best is not None else interval([])
    control = untrained[untrained[HEAD] == "fixed_reweight"].groupby(KAPPA)["gap"].mean()
    guards = [
        *seeds_guard([len(mlp), *(len(g) for g in gaps.values())]),
        *ceiling_guard(trained.groupby([HEAD, KAPPA])[["pre", "post"]].mean(), ["pre"], "digit"),
        *calibration_guard(probes, calibration),
    ]
    if not kappas:
        guards.append("no kappa > 1 in the sweep")
    conditions: list[tuple[str, Claim | bool]] = [
        ("kappa = 1 gives pre = post exactly", exact),
        # "pre >= post" within the comparable tolerance: failed only when pre is below post
        # by more than 3 points for some kappa
        ("pre >= post for every kappa > 1", every(not_worse(iv) for iv in ivs.values())),
        ("best kappa's pre not worse than the MLP head's by 3 points", not_worse(versus)),
    ]
    text = "; ".join(
        f"κ={k:g}: gap {ivs[k].text()}"
        + (f" (untrained {control[k] * 100:+.1f} pts)" if k in control.index else "")
        for k in kappas
    )
    evidence = f"κ=1 exact: {exact}; {text}; best κ pre - MLP pre {versus.text()}" + (
        "" if len(control) else "; no untrained control in the sweep"
    )
    return judge("T8", conditions, evidence, guards)


def t9_fine_gap(
    probes: pd.DataFrame,
    target: str = "fine",
    head: str = "mlp",
    calibration: Calibration | None = None,
) -> Verdict:
    """T9: the fine-label probe gap pre - post is a clear margin (>= 3 points, interval above
    0) for every loss, with the given head; the untrained-encoder gap is reported beside it."""
    wide = paired(probes, target)
    trained, untrained = trained_rows(wide), untrained_rows(wide)
    trained = trained[trained[HEAD] == head]
    losses = sorted(set(trained["loss.name"])) if "loss.name" in trained else []
    ivs = {
        loss: interval(by_seed(trained[trained["loss.name"] == loss], "gap").to_numpy())
        for loss in losses
    }
    control = untrained[untrained[HEAD] == head]["gap"]
    by_loss = trained.groupby("loss.name")[["pre", "post"]].mean() if losses else trained
    guards = [
        *seeds_guard(iv.n for iv in ivs.values()),
        *(ceiling_guard(by_loss, ["pre"], target) if losses else ["no trials"]),
        *calibration_guard(probes, calibration),
    ]
    conditions = [(f"{loss} gap by a clear margin", clear_margin(iv)) for loss, iv in ivs.items()]
    evidence = f"{head}, {target}: " + "; ".join(f"{k}: gap {iv.text()}" for k, iv in ivs.items())
    if len(control):
        evidence += f"; untrained encoder gap {control.mean() * 100:+.1f} pts"
    return judge("T9", conditions, evidence, guards)


def _varies(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].nunique() > 1


def _digits(probes: pd.DataFrame, trials: pd.DataFrame, cal: Calibration | None) -> list[Verdict]:
    # the axis the headed trials sweep: a control (head none, p_drop 0) beside a weight-decay
    # grid at p_drop 0.6 does not make it a drop-rate sweep
    headed = probes[probes[HEAD] != "none"] if HEAD in probes else probes
    if _varies(headed, P_DROP):
        return [t6_gap_grows_with_drop_rate(probes, calibration=cal)]
    if _varies(headed, WEIGHT_DECAY):
        return [t7_gap_shrinks_with_weight_decay(probes, calibration=cal)]
    return []  # the strength profile: reported as a table, no trend in §6


def _fine(probes: pd.DataFrame, trials: pd.DataFrame, cal: Calibration | None) -> list[Verdict]:
    target = "fine" if "fine" in set(probes["target"]) else "object"
    return [t9_fine_gap(probes, target, calibration=cal)]


# Which checks apply to which experiment (the spec name a sweep ran): (probes, trials,
# calibration) -> verdicts, where calibration is a separately trained control's, if any.
Checks = Callable[[pd.DataFrame, pd.DataFrame, Calibration | None], list[Verdict]]


def _without_calibration(checks: Callable[..., list[Verdict]]) -> Checks:
    """A synthetic experiment's checks: no digit, so no calibration to pass on."""
    return lambda probes, trials, cal: checks(probes, trials)


CHECKS: dict[str, Checks] = {
    **{name: _without_calibration(checks) for name, checks in SYNTHETIC_CHECKS.items()},
    "quickstart": _digits,  # T6: the quickstart sweeps p_drop
    "xue_digits": _digits,
    "xue_reweight": lambda probes, trials, cal: [t8_reweighting(probes, cal)],
    "xue_coarse_fine": _fine,
    "ouyang_bottleneck": bottleneck_checks,
}


def check(
    experiment: str,
    probes: pd.DataFrame,
    trials: pd.DataFrame,
    calibration: Calibration | None = None,
) -> list[Verdict]:
    """The verdicts of every check that applies to a sweep of `experiment`. `calibration`: the
    control trained before the sweep, used when the sweep holds no control of its own."""
    checks = CHECKS.get(experiment)
    if not checks or usable(probes).empty:  # no trial trained: the health line says so
        return []
    verdicts = checks(usable(probes), usable(trials), calibration)
    if len(usable(trials)) == len(trials):
        return verdicts
    # A comparison that a trial which did not train would have entered (its evidence differs
    # with the trial in) is inconclusive, naming it (docs/science.md §11).
    unhealthy = trials.drop(usable(trials).index)
    named = "; ".join(f"{r.trial_id} ({r.health})" for r in unhealthy.itertuples())
    with_all = {v.name: v for v in checks(probes, trials, calibration)}
    return [
        v
        if v.name not in with_all or with_all[v.name].evidence == v.evidence
        else Verdict(v.name, INCONCLUSIVE, v.evidence, f"trials that did not train: {named}")
        for v in verdicts
    ]
