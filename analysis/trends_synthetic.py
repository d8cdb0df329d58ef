"""The synthetic theory trends of docs/science.md §6 (T1-T5) as three-valued checks on a sweep's
trials table (one row per trial, feature weights as `synthetic/<layer>_weight[_norm]/<k>`).

Same rule as every trend (`analysis.verdicts`): paired 95% intervals over at least three seeds;
the feature strengths phi are read from the trials themselves, never copied from a spec.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd

from analysis.verdicts import (
    MARGIN,
    Verdict,
    above,
    below,
    comparable,
    interval,
    judge,
    seeds_guard,
)
from headsweep import metrics as M


def _lists(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].map(lambda v: tuple(json.loads(v)) if isinstance(v, str) else tuple(v))


def phi_of(trials: pd.DataFrame) -> list[float]:
    """The feature strengths most trials ran with."""
    return list(_lists(trials, "phi").mode()[0])


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
            frame = frame[_lists(frame, column) == tuple(value)]
    if wd is not None:
        frame = frame[frame["weight_decay"] == wd]
    return frame


def _weights(frame: pd.DataFrame, layer: str, norm: bool = False) -> np.ndarray:
    """(trials, features) weights of one layer."""
    columns = M.weight_columns(frame.columns, layer, norm)
    return np.asarray(frame[columns].to_numpy(dtype=float), dtype=float)


def t1_t2_square_root_law(trials: pd.DataFrame, phi: list[float]) -> list[Verdict]:
    """T1: with no drop and no weight decay, the log-log slope of pre against post weight has
    its interval within 0.5 ± 0.05 and W1W1ᵀ ≈ W2ᵀW2 (balancedness < 0.1 in every seed).
    T2: the log max/min spread of the feature weights is larger post than pre (paired
    interval above 0)."""
    base = _synthetic(trials, [0.0] * len(phi), phi, 0.0)
    slopes = interval(base[M.SLOPE].to_numpy())
    balance = base[M.BALANCEDNESS].to_numpy()
    pre, post = _weights(base, "pre"), _weights(base, "post")
    spread = interval(np.log(post.max(1) / post.min(1)) - np.log(pre.max(1) / pre.min(1)))
    guards = seeds_guard([len(base)])
    t1 = judge(
        "T1",
        [
            ("slope within 0.5 ± 0.05", slopes.low >= 0.45 and slopes.high <= 0.55),
            ("balanced layers", bool(len(balance)) and bool((balance < 0.1).all())),
        ],
        f"slope {slopes.text(1, '')}, balancedness max {balance.max(initial=0):.3f}",
        guards,
    )
    t2 = judge(
        "T2",
        [("post spread above pre spread", above(spread))],
        f"log spread post - pre {spread.text(1, '')}",
        guards,
    )
    return [t1, t2]


def t3_drop_lowers_post_faster(
    trials: pd.DataFrame, phi: list[float], feature: int, p: float
) -> Verdict:
    """T3: raising p_j (0 -> p) multiplies feature j's normalised post weight by a smaller
    factor than its normalised pre weight (paired interval of post - pre factor below 0), and
    the pre factor is below 1."""
    zero = [0.0] * len(phi)
    raised = [p if k == feature else 0.0 for k in range(len(phi))]
    before = _synthetic(trials, zero, phi, 0.0).set_index("seed")
    after = _synthetic(trials, raised, phi, 0.0).set_index("seed")
    seeds = before.index.intersection(after.index)
    post_key, pre_key = M.weight("post", feature, True), M.weight("pre", feature, True)
    post = (after.loc[seeds, post_key] / before.loc[seeds, post_key]).values
    pre = (after.loc[seeds, pre_key] / before.loc[seeds, pre_key]).values
    faster = interval(post - pre)
    return judge(
        "T3",
        [
            ("post factor below pre factor", below(faster)),
            ("pre factor below 1", below(interval(pre - 1))),
        ],
        f"feature {feature}, p 0 → {p:g}: post × {post.mean():.3f}, pre × {pre.mean():.3f}; "
        f"post - pre {faster.text(1, '')}",
        seeds_guard([len(seeds)]),
    )


def t4_weight_decay_removes_weak_feature(
    trials: pd.DataFrame, phi: list[float], drop: list[float], weak: int
) -> Verdict:
    """T4: at the largest weight decay the weak feature (the one augmentation drops most) has
    pre and post weights below 1% of the largest feature weight in both layers in every seed;
    its normalised pre-post gap never grows with weight decay (each step within +0.01)."""
    frame = _synthetic(trials, drop, phi)
    rows, counts = [], []
    for wd, group in frame.groupby("weight_decay"):
        pre, post = _weights(group, "pre"), _weights(group, "post")
        pre_n, post_n = _weights(group, "pre", True), _weights(group, "post", True)
        counts.append(len(group))
        rows.append(
            (
                wd,
                (pre[:, weak] / pre.max(1)).max(),
                (post[:, weak] / post.max(1)).max(),
                (pre_n[:, weak] - post_n[:, weak]).mean(),
            )
        )
    gaps = [r[3] for r in rows]
    text = "; ".join(f"wd={wd:g}: pre {a:.3f}, post {b:.3f}, gap {g:+.3f}" for wd, a, b, g in rows)
    return judge(
        "T4",
        [
            (
                "weak feature gone in both layers",
                bool(rows) and rows[-1][1] < 0.01 and rows[-1][2] < 0.01,
            ),
            (
                "gap does not grow with weight decay",
                all(b <= a + 0.01 for a, b in itertools.pairwise(gaps)),
            ),
        ],
        f"feature {weak} relative to the largest weight (worst seed): {text}",
        seeds_guard(counts),
    )


def t5_sign_flip(probes: pd.DataFrame, feature: int = 0) -> Verdict:
    """T5: with the sign-flip augmentation on feature j, its probe is well above chance pre (a
    clear margin over 0.5 and a mean above 0.75) and near chance post (comparable to 0.5)."""
    rows = probes[(probes["target"] == f"feature{feature}") & probes["tap"].isin(["pre", "post"])]
    flipped = rows[_lists(rows, "sign_flip").map(lambda v: feature in v)]
    wide = flipped.pivot_table(index="trial_id", columns="tap", values="accuracy")
    pre, post = interval(wide["pre"] - 0.5), interval(wide["post"] - 0.5)
    return judge(
        "T5",
        [
            ("pre well above chance", pre.mean + 0.5 > 0.75 and pre.low > MARGIN),
            ("post near chance", comparable(post)),
        ],
        f"feature {feature} flipped: pre - chance {pre.text()}, post - chance {post.text()}",
        seeds_guard([len(wide)]),
    )


def _linear(probes: pd.DataFrame, trials: pd.DataFrame) -> list[Verdict]:
    phi = phi_of(trials)
    drops = _lists(trials, "feature_drop")
    raised = next((d for d in drops if sum(v > 0 for v in d) == 1), None)
    out = t1_t2_square_root_law(trials, phi)
    if raised is not None:
        feature = next(k for k, v in enumerate(raised) if v > 0)
        out.append(t3_drop_lowers_post_faster(trials, phi, feature, raised[feature]))
        out.append(t4_weight_decay_removes_weak_feature(trials, phi, list(raised), feature))
    return out


SYNTHETIC_CHECKS = {
    "xue_synthetic_linear": _linear,
    "xue_synthetic_relu": lambda probes, trials: [t5_sign_flip(probes)],
}
