"""[O]'s trends on the bottleneck sweeps (docs/science.md §6, T10–T12): the MI regulariser,
the structural heads (discrete, top-k SAE) judged at their best setting of a grid fixed before
the run and on their shape, and encoder against projector beyond an untrained network's gap.
The same rule as every trend (`analysis.verdicts`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.paired import (
    by_seed,
    main_target,
    paired,
    paired_diff,
    trained_rows,
    untrained_rows,
)
from analysis.verdicts import (
    EPOCHS,
    HEAD,
    INCONCLUSIVE,
    Calibration,
    Claim,
    Verdict,
    above,
    below,
    calibration_guard,
    ceiling_guard,
    every,
    interval,
    judge,
    not_worse,
    seeds_guard,
)
from headsweep import metrics as M


def bottleneck_checks(
    probes: pd.DataFrame, trials: pd.DataFrame, cal: Calibration | None
) -> list[Verdict]:
    target = main_target(probes)
    return [
        t10_mi_regulariser(trials, target, probes, cal),
        t11_structural_bottlenecks(trials, target, probes, cal),
        t12_encoder_beats_projector(probes, target, cal),
    ]


def _by_method(trials: pd.DataFrame, target: str) -> pd.DataFrame:
    """Finished trials labelled baseline / MI λ=… / discrete L=… / topk_sae k/d=…."""
    frame = trials[trials["status"] == "finished"]
    frame = (frame[frame[EPOCHS] > 0] if EPOCHS in frame else frame).copy()  # trained only
    k = frame["model.head.k_per_dim"] if "model.head.k_per_dim" in frame else frame[HEAD]
    frame["method"] = np.select(
        [frame[HEAD] == "discrete", frame[HEAD] == "topk_sae", frame["loss.mi_lambda"] > 0],
        [
            "discrete L=" + frame["model.head.levels"].astype(str),
            "topk_sae k/d=" + k.astype(str),
            "MI λ=" + frame["loss.mi_lambda"].astype(str),
        ],
        "baseline",
    )
    frame["pre"] = frame[M.probe(target, "pre")]
    frame["seed"] = frame["train.seed"]
    return frame


def _per_seed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per seed (the mean of a method's trials of that seed: a grid may repeat one)."""
    return frame.groupby("seed")[columns].mean()


def t10_mi_regulariser(
    trials: pd.DataFrame, target: str, probes=None, calibration: Calibration | None = None
) -> Verdict:
    """T10: every lambda > 0 ends with a lower logged I2 than lambda = 0 (paired interval below
    0: guaranteed by the λ·I₂ term itself, a sanity check), and, [O]'s claim, the MI term
    raises the pre probe: at the best λ of the sweep's grid (a selection, named as one) the
    paired gain over λ = 0 lies above 0."""
    frame = _by_method(trials, target)
    base = _per_seed(frame[frame["method"] == "baseline"], [M.MI, "pre"])
    conditions: list[tuple[str, Claim | bool]] = []
    parts, counts, gains = [], [len(base)], {}
    for method, group in frame[frame["method"].str.startswith("MI")].groupby("method"):
        group = _per_seed(group, [M.MI, "pre"])
        d_mi = paired_diff(group[M.MI], base[M.MI])
        gains[method] = paired_diff(group["pre"], base["pre"])
        counts.append(d_mi.n)
        conditions.append((f"{method} lowers I₂ (sanity)", below(d_mi)))
        parts.append(f"{method}: ΔI₂ {d_mi.text(1, '', 3)}, Δ{target} pre {gains[method].text()}")
    if gains:
        best = max(gains, key=lambda m: gains[m].mean)
        conditions.append((f"best {best} (a selection) raises {target} pre", above(gains[best])))
        parts.append(f"best of the grid: {best}")
    guards = [
        *seeds_guard(counts),
        *ceiling_guard(frame.groupby("method")[["pre"]].mean(), ["pre"], target),
        *(calibration_guard(probes, calibration) if probes is not None else []),
    ]
    if not parts:
        guards.append("no MI regulariser trials")
    return judge("T10", conditions, "; ".join(parts), guards)


def _family(method: str) -> str:
    return method.split(" ")[0]  # "discrete L=5" -> discrete, "MI λ=0.1" -> MI


def _strength(method: str) -> float:
    """The setting's value on its axis ("discrete L=5" -> 5)."""
    return float(method.rsplit("=", 1)[1])


def _rise_then_fall(gains: dict[str, pd.Series], best: str) -> Claim:
    """[O]'s shape over a head's strength: the best setting inside the grid, above both ends
    (paired over seeds). With the best at an end of the grid the peak is not inside it: not
    evidence either way."""
    ordered = sorted(gains, key=_strength)
    if len(ordered) < 3:
        return Claim(INCONCLUSIVE, "fewer than 3 settings: no shape")
    if best in (ordered[0], ordered[-1]):
        return Claim(INCONCLUSIVE, f"the best setting {best} is at the grid's end")
    return every(above(paired_diff(gains[best], gains[end])) for end in (ordered[0], ordered[-1]))


def t11_structural_bottlenecks(
    trials: pd.DataFrame, target: str, probes=None, calibration: Calibration | None = None
) -> Verdict:
    """T11 (docs/science.md §6, §10): each structural head (discrete, topk_sae) at its best
    setting of the sweep's grid (a selection, named as one) reaches the baseline's pre
    accuracy (not worse by more than 3 points); over the strength it rises then falls ([O]);
    and the structural heads' best gains, averaged, are not below the MI term's best gain by
    more than 3 points (paired over seeds). Every setting is shown; none is required."""
    frame = _by_method(trials, target)
    base = _per_seed(frame[frame["method"] == "baseline"], ["pre"])["pre"]
    gains: dict[str, pd.Series] = {}
    for method, group in frame[frame["method"] != "baseline"].groupby("method"):
        pre = _per_seed(group, ["pre"])["pre"]
        seeds = pre.index.intersection(base.index)
        gains[method] = pre.loc[seeds] - base.loc[seeds]
    families: dict[str, dict[str, pd.Series]] = {}
    for method, gain in gains.items():
        families.setdefault(_family(method), {})[method] = gain
    best = {f: max(g, key=lambda m: g[m].mean()) for f, g in families.items()}
    conditions: list[tuple[str, Claim | bool]] = []
    for family in sorted(set(best) - {"MI"}):
        choice = best[family]
        conditions.append(
            (f"{choice} (best {family}) reaches the baseline", not_worse(interval(gains[choice])))
        )
        if family == "discrete":
            conditions.append(
                ("discrete rises then falls over L", _rise_then_fall(families[family], choice))
            )
    parts = [f"{m}: Δ{target} pre {interval(g).text()}" for m, g in gains.items()]
    guards = [
        *seeds_guard([len(base), *(len(g) for g in gains.values())]),
        *ceiling_guard(frame.groupby("method")[["pre"]].mean(), ["pre"], target),
        *(calibration_guard(probes, calibration) if probes is not None else []),
    ]
    structural = [gains[best[f]] for f in best if f != "MI"]
    if structural and "MI" in best:
        versus = interval(
            (pd.concat(structural, axis=1).mean(axis=1) - gains[best["MI"]]).dropna().to_numpy()
        )
        conditions.append(("best structural gain at least the MI term's", not_worse(versus)))
        parts.append(f"best structural - best MI gain {versus.text()}")
    else:
        guards.append("needs both structural and MI variants")
    return judge("T11", conditions, "; ".join(parts), guards)


def t12_encoder_beats_projector(
    probes: pd.DataFrame, target: str, calibration: Calibration | None = None
) -> Verdict:
    """T12: encoder (pre) features beat projector (post) features on the standard probe by more
    than an *untrained* network of the same shape shows (the probe floors an untrained post
    tap: +14.5 points on the CPU instrument before any training): for every head other than
    `none`, the trained gap minus the untrained gap (paired over seeds) lies above 0.
    Inconclusive for a head without its untrained control."""
    every_row = paired(probes, target)
    wide, untrained = trained_rows(every_row), untrained_rows(every_row)
    wide = wide[wide[HEAD] != "none"]
    heads = sorted(set(wide[HEAD]))
    gaps = {h: by_seed(wide[wide[HEAD] == h], "gap") for h in heads}
    controls = {h: by_seed(untrained[untrained[HEAD] == h], "gap") for h in heads}
    ivs = {h: interval(g.to_numpy()) for h, g in gaps.items()}
    beyond = {h: paired_diff(gaps[h], controls[h]) for h in heads if len(controls[h])}
    guards = [
        *seeds_guard(iv.n for iv in ivs.values()),
        *ceiling_guard(wide.groupby(HEAD)[["pre", "post"]].mean(), ["pre", "post"], target),
        *calibration_guard(probes, calibration),
    ]
    if not heads:
        guards.append("no head other than none")
    missing = [h for h in heads if h not in beyond]
    if missing:
        guards.append(f"no untrained control (train.epochs 0) for {', '.join(missing)}")
    conditions = [
        (f"{h}: pre - post above the untrained {h}'s", above(iv)) for h, iv in beyond.items()
    ]
    evidence = f"{target} gap " + ", ".join(
        f"{h}: {iv.text()}"
        + (f" (untrained {interval(controls[h].to_numpy()).text()})" if len(controls[h]) else "")
        for h, iv in ivs.items()
    )
    return judge("T12", conditions, evidence, guards)
