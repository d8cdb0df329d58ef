"""The trends of SCIENCE.md §6 as checks on a sweep's tables, so the slow tests and
REPRODUCTION.md judge the same numbers the same way.

Each check compares pre and post of the same model, pairs over seeds, and returns a `Trend`:
whether the expected direction held, and the figures it was judged on. A check never fits a
threshold to the data: where "small" or "comparable" must be decided, the rule is stated in the
check's docstring and uses the seed spread.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

HEAD = "model.head.name"
PHI = [1.0, 0.8, 0.6, 0.4, 0.2]  # the feature strengths of xue_synthetic_linear's base


@dataclass(frozen=True)
class Trend:
    name: str
    holds: bool
    evidence: str

    def line(self) -> str:
        return f"{self.name}: {'held' if self.holds else 'did NOT hold'} ({self.evidence})"


def _paired(probes: pd.DataFrame, target: str) -> pd.DataFrame:
    """One row per trial: pre, post and gap for `target`."""
    rows = probes[(probes["target"] == target) & probes["tap"].isin(["pre", "post"])]
    keys = [
        c
        for c in rows.columns
        if c not in ("tap", "tap_index", "is_pre", "is_post", "accuracy", "dim", "protocol")
    ]
    wide = rows.pivot_table(
        index=keys, columns="tap", values="accuracy", aggfunc="first"
    ).reset_index()
    wide["gap"] = wide["pre"] - wide["post"]
    return wide


def _seed_slopes(frame: pd.DataFrame, axis: str, value: str, log_x: bool = False) -> np.ndarray:
    """Least-squares slope of `value` against `axis`, one per seed."""
    slopes = []
    for _, group in frame.groupby("seed"):
        x = group[axis].to_numpy(dtype=float)
        if log_x:
            x = np.log10(np.where(x > 0, x, np.nan))
            keep = np.isfinite(x)
            x, y = x[keep], group[value].to_numpy(dtype=float)[keep]
        else:
            y = group[value].to_numpy(dtype=float)
        if len(np.unique(x)) >= 2:
            slopes.append(np.polyfit(x, y, 1)[0])
    return np.array(slopes)


def _mean_sd(values: np.ndarray) -> str:
    sd = values.std(ddof=1) if len(values) > 1 else math.nan
    return f"{values.mean():+.3f} ± {sd:.3f} over {len(values)} seeds"


def t6_gap_grows_with_drop_rate(probes: pd.DataFrame, head: str = "mlp") -> Trend:
    """T6: digit gap small at p_drop = 0, pre > post for p_drop > 0, growing with p_drop.
    Holds when the mean gap at every p_drop > 0 is positive, every seed's slope of gap against
    p_drop is positive, and the gap at p_drop = 0 is below the gap at the largest p_drop."""
    wide = _paired(probes, "digit")
    wide = wide[wide[HEAD] == head]
    by_p = wide.groupby("aug.p_drop")["gap"].mean()
    slopes = _seed_slopes(wide, "aug.p_drop", "gap")
    holds = bool(
        (by_p[by_p.index > 0] > 0).all()
        and len(slopes)
        and (slopes > 0).all()
        and by_p.iloc[0] < by_p.iloc[-1]
    )
    gaps = ", ".join(f"p={p:g}: {g:+.3f}" for p, g in by_p.items())
    return Trend("T6", holds, f"{head} digit gap {gaps}; slope of gap vs p_drop {_mean_sd(slopes)}")


def t7_gap_shrinks_with_weight_decay(probes: pd.DataFrame, head: str = "mlp") -> Trend:
    """T7: the digit gap shrinks as weight decay grows: every seed's slope of the gap against
    log10(weight decay) (over the non-zero values) is negative."""
    wide = _paired(probes, "digit")
    wide = wide[wide[HEAD] == head]
    by_wd = wide.groupby("optim.weight_decay")["gap"].mean()
    slopes = _seed_slopes(wide, "optim.weight_decay", "gap", log_x=True)
    holds = bool(len(slopes) and (slopes < 0).all())
    gaps = ", ".join(f"wd={w:g}: {g:+.3f}" for w, g in by_wd.items())
    return Trend("T7", holds, f"{head} digit gap {gaps}; slope per decade {_mean_sd(slopes)}")


def t8_reweighting(probes: pd.DataFrame) -> Trend:
    """T8: kappa = 1 gives pre = post exactly; kappa > 1 gives a mean digit gap >= 0 for every
    kappa; the best kappa's pre accuracy is within two seed standard deviations of the MLP
    head's (or above it)."""
    wide = _paired(probes, "digit")
    reweight = wide[wide[HEAD] == "fixed_reweight"]
    identity = reweight[reweight["model.head.kappa"] == 1.0]
    exact = bool(len(identity) and (identity["gap"].abs() < 1e-12).all())
    above = reweight[reweight["model.head.kappa"] > 1.0].groupby("model.head.kappa")
    gaps = above["gap"].mean()
    pre = above["pre"].mean()
    mlp = wide[wide[HEAD] == "mlp"]["pre"]
    best = pre.max() if len(pre) else math.nan
    sd = max(mlp.std(ddof=1), above["pre"].std(ddof=1).max()) if len(mlp) > 1 else 0.0
    comparable = bool(best >= mlp.mean() - 2 * sd)
    holds = exact and bool((gaps >= 0).all()) and comparable
    text = ", ".join(
        f"κ={k:g}: gap {g:+.3f}, pre {p:.3f}" for (k, g), p in zip(gaps.items(), pre, strict=True)
    )
    return Trend(
        "T8",
        holds,
        f"κ=1 pre=post exactly: {exact}; {text}; MLP pre {mlp.mean():.3f} (2 sd = {2 * sd:.3f})",
    )


def t9_fine_gap(probes: pd.DataFrame, target: str = "fine", head: str = "mlp") -> Trend:
    """T9: the fine-label probe gap is positive with its paired 95% interval above 0, for
    every loss, with the given head."""
    from scipy import stats

    wide = _paired(probes, target)
    wide = wide[wide[HEAD] == head]
    parts, holds = [], True
    for loss, group in wide.groupby("loss.name"):
        gap = group["gap"].to_numpy()
        half = stats.t.ppf(0.975, len(gap) - 1) * gap.std(ddof=1) / math.sqrt(len(gap))
        low = gap.mean() - half
        holds &= bool(low > 0)
        parts.append(f"{loss}: gap {gap.mean():+.3f} [95% CI low {low:+.3f}]")
    return Trend("T9", holds and bool(parts), f"{head}, {target}: " + "; ".join(parts))


def _by_variant(trials: pd.DataFrame, target: str) -> pd.DataFrame:
    finished = trials[trials["status"] == "finished"].copy()
    finished["method"] = np.select(
        [
            finished[HEAD] == "discrete",
            finished[HEAD] == "topk_sae",
            finished["loss.mi_lambda"] > 0,
        ],
        [
            "discrete L=" + finished["model.head.levels"].astype(str),
            "topk_sae k=" + finished["model.head.k"].astype(str),
            "MI λ=" + finished["loss.mi_lambda"].astype(str),
        ],
        "baseline",
    )
    finished["pre"] = finished[f"probe/{target}/pre"]
    return finished


def t10_mi_regulariser(trials: pd.DataFrame, target: str) -> Trend:
    """T10: every lambda > 0 ends with a lower logged I2 than lambda = 0 in every seed, and its
    mean pre-projection accuracy is not lower than the baseline's by more than two seed
    standard deviations of the difference."""
    frame = _by_variant(trials, target)
    base = frame[frame["method"] == "baseline"].set_index("train.seed")
    parts, holds = [], True
    for method, group in frame[frame["method"].str.startswith("MI")].groupby("method"):
        group = group.set_index("train.seed")
        seeds = group.index.intersection(base.index)
        d_mi = (group.loc[seeds, "train/mi"] - base.loc[seeds, "train/mi"]).to_numpy()
        d_acc = (group.loc[seeds, "pre"] - base.loc[seeds, "pre"]).to_numpy()
        sd = d_acc.std(ddof=1) if len(d_acc) > 1 else 0.0
        ok = bool(len(seeds) and (d_mi < 0).all() and d_acc.mean() >= -2 * sd)
        holds &= ok
        parts.append(f"{method}: ΔI₂ {_mean_sd(d_mi)}, Δ{target} pre {_mean_sd(d_acc)}")
    return Trend("T10", holds and bool(parts), "; ".join(parts))


def t11_structural_bottlenecks(trials: pd.DataFrame, target: str) -> Trend:
    """T11: discrete and top-k SAE heads reach the baseline's pre accuracy (mean difference
    >= -2 seed sd) and their average gain is at least the MI regulariser's average gain."""
    frame = _by_variant(trials, target)
    base = frame[frame["method"] == "baseline"].set_index("train.seed")["pre"]
    gains: dict[str, float] = {}
    parts, reach = [], True
    for method, group in frame[frame["method"] != "baseline"].groupby("method"):
        diff = (group.set_index("train.seed")["pre"] - base).dropna().to_numpy()
        gains[method] = diff.mean()
        if not method.startswith("MI"):
            sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
            reach &= bool(diff.mean() >= -2 * sd)
        parts.append(f"{method}: Δ{target} pre {_mean_sd(diff)}")
    structural = [g for m, g in gains.items() if not m.startswith("MI")]
    mi = [g for m, g in gains.items() if m.startswith("MI")]
    at_least = bool(structural and mi and np.mean(structural) >= np.mean(mi))
    evidence = "; ".join(parts)
    if structural and mi:
        evidence += f"; structural mean {np.mean(structural):+.3f} vs MI mean {np.mean(mi):+.3f}"
    return Trend("T11", reach and at_least, evidence)


def t12_encoder_beats_projector(probes: pd.DataFrame, target: str) -> Trend:
    """T12: on the standard linear probe, encoder (pre) features beat projector (post) features:
    the mean gap is positive for every head other than `none`."""
    wide = _paired(probes, target)
    wide = wide[wide[HEAD] != "none"]
    by_head = wide.groupby(HEAD)["gap"].mean()
    holds = bool(len(by_head) and (by_head > 0).all())
    return Trend("T12", holds, ", ".join(f"{h}: {g:+.3f}" for h, g in by_head.items()))


def _synthetic(
    trials: pd.DataFrame,
    drop: list[float] | None = None,
    phi: list[float] | None = None,
    wd: float | None = None,
) -> pd.DataFrame:
    """Finished synthetic trials at one setting (lists are stored as JSON text)."""
    frame = trials[trials["status"] == "finished"]
    for column, value in (("feature_drop", drop), ("phi", phi)):
        if value is not None:
            frame = frame[frame[column].map(json.loads).map(lambda v, w=value: v == w)]
    if wd is not None:
        frame = frame[frame["weight_decay"] == wd]
    return frame


def _weights(frame: pd.DataFrame, layer: str, norm: bool = False) -> np.ndarray:
    """(trials, features) weights of one layer."""
    key = f"synthetic/{layer}_weight{'_norm' if norm else ''}/"
    columns = sorted(
        (c for c in frame.columns if c.startswith(key)), key=lambda c: int(c.rsplit("/", 1)[1])
    )
    return frame[columns].to_numpy(dtype=float)


def t1_t2_square_root_law(trials: pd.DataFrame, phi: list[float]) -> list[Trend]:
    """T1: with no drop and no weight decay, the log-log slope of pre against post weight is
    0.5 ± 0.05 in every seed and W1W1ᵀ ≈ W2ᵀW2 (balancedness < 0.1). T2: the max/min spread
    of the feature weights is larger post than pre in every seed."""
    base = _synthetic(trials, [0.0] * len(phi), phi, 0.0)
    slopes = base["synthetic/slope"].to_numpy()
    balance = base["synthetic/balancedness"].to_numpy()
    t1 = bool(len(slopes) and (np.abs(slopes - 0.5) <= 0.05).all() and (balance < 0.1).all())
    pre, post = _weights(base, "pre"), _weights(base, "post")
    spread_pre, spread_post = pre.max(1) / pre.min(1), post.max(1) / post.min(1)
    t2 = bool(len(pre) and (spread_post > spread_pre).all())
    return [
        Trend("T1", t1, f"slope {_mean_sd(slopes)}, balancedness max {balance.max():.3f}"),
        Trend("T2", t2, f"spread pre {_mean_sd(spread_pre)}, post {_mean_sd(spread_post)}"),
    ]


def t3_drop_lowers_post_faster(
    trials: pd.DataFrame, phi: list[float], feature: int, p: float
) -> Trend:
    """T3: raising p_j (0 -> p) lowers feature j's normalised post weight by a larger factor
    than its normalised pre weight, in every seed."""
    zero = [0.0] * len(phi)
    raised = [p if k == feature else 0.0 for k in range(len(phi))]
    before = _synthetic(trials, zero, phi, 0.0).set_index("seed")
    after = _synthetic(trials, raised, phi, 0.0).set_index("seed")
    seeds = before.index.intersection(after.index)
    key = "synthetic/{}_weight_norm/" + str(feature)
    post = (after.loc[seeds, key.format("post")] / before.loc[seeds, key.format("post")]).values
    pre = (after.loc[seeds, key.format("pre")] / before.loc[seeds, key.format("pre")]).values
    holds = bool(len(seeds) and ((post < pre) & (pre < 1)).all())
    return Trend(
        "T3",
        holds,
        f"feature {feature}, p 0 → {p:g}: normalised post weight × "
        f"{post.mean():.3f}, pre × {pre.mean():.3f} ({len(seeds)} seeds)",
    )


def t4_weight_decay_removes_weak_feature(
    trials: pd.DataFrame, phi: list[float], drop: list[float], weak: int
) -> Trend:
    """T4: the weak feature (here: the one augmentation drops most, so its alignment M_k/Σ_k
    is smallest) has, at the largest weight decay, pre and post weights below 1% of the largest
    feature weight in both layers; and its normalised pre-post gap never grows with weight
    decay (each step within +0.01)."""
    frame = _synthetic(trials, drop, phi)
    rows = []
    for wd, group in frame.groupby("weight_decay"):
        pre, post = _weights(group, "pre"), _weights(group, "post")
        pre_n, post_n = _weights(group, "pre", True), _weights(group, "post", True)
        rows.append(
            (
                wd,
                (pre[:, weak] / pre.max(1)).mean(),
                (post[:, weak] / post.max(1)).mean(),
                (pre_n[:, weak] - post_n[:, weak]).mean(),
            )
        )
    gaps = [r[3] for r in rows]
    holds = bool(
        rows
        and rows[-1][1] < 0.01
        and rows[-1][2] < 0.01
        and all(b <= a + 0.01 for a, b in itertools.pairwise(gaps))
    )
    text = "; ".join(f"wd={wd:g}: pre {a:.3f}, post {b:.3f}, gap {g:+.3f}" for wd, a, b, g in rows)
    return Trend("T4", holds, f"feature {weak} relative to the largest weight: {text}")


def t5_sign_flip(probes: pd.DataFrame, feature: int = 0) -> Trend:
    """T5: with the sign-flip augmentation on feature j, its probe is well above chance pre
    (mean accuracy > 0.75) and near chance post (|mean - 0.5| < 0.05)."""
    wide = _paired(probes, f"feature{feature}")
    flipped = wide[wide["sign_flip"].map(json.loads).map(lambda v: feature in v)]
    pre, post = flipped["pre"].mean(), flipped["post"].mean()
    holds = bool(len(flipped) and pre > 0.75 and abs(post - 0.5) < 0.05)
    return Trend(
        "T5",
        holds,
        f"feature {feature} flipped: pre {pre:.3f}, post {post:.3f} "
        f"over {len(flipped)} seeds (chance 0.5)",
    )


# --------------------------------------------------------------------------- report


def _varies(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].nunique() > 1


def _digits(probes: pd.DataFrame, trials: pd.DataFrame) -> list[Trend]:
    if _varies(probes, "aug.p_drop"):
        return [t6_gap_grows_with_drop_rate(probes)]
    if _varies(probes, "optim.weight_decay"):
        return [t7_gap_shrinks_with_weight_decay(probes)]
    return []  # the strength profile: reported as a table, no trend in SCIENCE.md


def _bottleneck(probes: pd.DataFrame, trials: pd.DataFrame) -> list[Trend]:
    target = _main_target(probes)
    return [
        t10_mi_regulariser(trials, target),
        t11_structural_bottlenecks(trials, target),
        t12_encoder_beats_projector(probes, target),
    ]


# Which checks apply to which experiment (the spec name a sweep ran).
CHECKS = {
    "xue_synthetic_linear": lambda probes, trials: [
        *t1_t2_square_root_law(trials, PHI),
        t3_drop_lowers_post_faster(trials, PHI, 2, 0.9),
        t4_weight_decay_removes_weak_feature(trials, PHI, [0.0, 0.0, 0.9, 0.0, 0.0], 2),
    ],
    "xue_synthetic_relu": lambda probes, trials: [t5_sign_flip(probes)],
    "xue_digits": _digits,
    "xue_reweight": lambda probes, trials: [t8_reweighting(probes)],
    "xue_coarse_fine": lambda probes, trials: [
        t9_fine_gap(probes, "fine" if "fine" in set(probes["target"]) else "object")
    ],
    "ouyang_bottleneck": _bottleneck,
}


def _main_target(probes: pd.DataFrame) -> str:
    targets = set(probes["target"])
    return (
        "object"
        if "object" in targets and "digit" not in targets
        else ("digit" if "digit" in targets else sorted(targets)[0])
    )


def check_sweep(name: str, loc) -> tuple[str, list[Trend]]:
    """The experiment a stored sweep ran and the trend checks that apply to it."""
    from analysis.report import analyze_sweep

    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    experiment = tracker.client.get_experiment(parent.info.experiment_id).name
    analyze_sweep(name, loc)
    tables = loc.tables(name)
    probes = pd.read_parquet(tables / "probes.parquet")
    trials = pd.read_parquet(tables / "trials.parquet")
    checks = CHECKS.get(experiment)
    return experiment, (checks(probes, trials) if checks and not probes.empty else [])


def main(argv: list[str] | None = None) -> int:
    """`python -m analysis.trends [--root runs] SWEEP...`: print each sweep's gap table and
    the trend checks that apply to it (the numbers REPRODUCTION.md quotes)."""
    import argparse

    from analysis.report import analyze_sweep
    from sweeps.driver import Locations

    parser = argparse.ArgumentParser(prog="python -m analysis.trends")
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--root", default="runs")
    args = parser.parse_args(argv)
    loc = Locations.make(args.root)
    for name in args.sweeps:
        experiment, results = check_sweep(name, loc)
        print(f"## {name} ({experiment})\n")
        print(analyze_sweep(name, loc, log_to_mlflow=False).markdown())
        for result in results:
            print(f"- {result.line()}")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
