"""Every trend check (T1-T12 of docs/science.md §6 and the synthetic E5 of §10) reaches each of
its three outcomes, held, failed and inconclusive, on small hand-made tables whose answer is
known, and says the number it was judged on (issue 10, acceptance 3).

Self-contained on purpose: tests/test_trends.py covers the same checks with other tables. Per-seed
noise sums to zero over three seeds (`JIT`), so every mean below is exactly the designed value
and the evidence's rounded numbers can be asserted; a check that judged the wrong rows or the
wrong column would print another number and fail here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from analysis import trends
from analysis import trends_bottleneck as tb
from analysis import trends_synthetic as ts
from analysis.verdicts import FAILED, HELD, INCONCLUSIVE, Verdict
from headsweep.synthetic_config import POST_ERROR, PRE_ERROR

JIT = (-0.004, 0.0, 0.004, 0.002)  # the first three sum to 0: means are exact with 3 seeds
PHI = [1.0, 0.8, 0.6, 0.4, 0.2]


def probes(rows: list[dict]) -> pd.DataFrame:
    """Long probes table (one row per trial x tap) from rows with `pre` and `post`."""
    out = []
    for i, row in enumerate(rows):
        rest = {k: v for k, v in row.items() if k not in ("pre", "post")}
        for tap in ("pre", "post"):
            out.append({"trial_id": f"t{i}", "target": "digit", **rest, "tap": tap,
                        "accuracy": row[tap]})  # fmt: skip
    return pd.DataFrame(out)


def control(seeds: int = 3, digit: float = 0.8) -> list[dict]:
    """The calibration control (head none, p_drop 0): it learned the digit unless digit < 0.6."""
    return [{"seed": s, "model.head.name": "none", "aug.p_drop": 0.0, "pre": digit, "post": digit}
            for s in range(seeds)]  # fmt: skip


# --------------------------------------------------------------------------- synthetic tables


def trial(seed, drop, wd, pre, post, **extra) -> dict:
    row = {"status": "finished", "seed": seed, "phi": json.dumps(PHI),
           "feature_drop": json.dumps(drop), "weight_decay": wd,
           "synthetic/balancedness": 0.01, **extra}  # fmt: skip
    for layer, w in (("pre", pre), ("post", post)):
        for k, v in enumerate(w):
            row[f"synthetic/{layer}_weight/{k}"] = v
            row[f"synthetic/{layer}_weight_norm/{k}"] = v / max(w)
    return row


def linear(seeds=3, slope=0.5, spread_pre=False, factor=(0.5, 0.8), weak=0.001) -> pd.DataFrame:
    """xue_synthetic_linear's shape: no drop, p_2 = 0.9, and a weight-decay series there.
    Post weights phi^2, pre weights phi (the square-root law); spread_pre swaps them."""
    post, pre = np.square(PHI), np.array(PHI)
    if spread_pre:
        post, pre = pre, post
    raised = [0.0, 0.0, 0.9, 0.0, 0.0]
    rows = []
    for s in range(seeds):
        rows.append(trial(s, [0.0] * 5, 0.0, pre, post, **{"synthetic/slope": slope + JIT[s]}))
        pre_r, post_r = pre.copy(), post.copy()
        post_r[2] *= factor[0]
        pre_r[2] *= factor[1]
        rows.append(trial(s, raised, 0.0, pre_r, post_r))
        for wd, scale in ((1e-3, 0.5), (1e-2, weak)):
            pre_w, post_w = pre_r.copy(), post_r.copy()
            pre_w[2], post_w[2] = scale * pre_r[2], scale * post_r[2]
            rows.append(trial(s, raised, wd, pre_w, post_w))
    return pd.DataFrame(rows)


def near_one(
    seeds=3, gap=0.05, error=0.004, pre=0.9, ps=(0.95, 0.97, 0.99), growth=0.5
) -> pd.DataFrame:
    """E5's trials: feature 2 dropped with p >= 0.95, no weight decay, probe gap `gap` at
    p = 0.95, growing by `growth` per unit p (+1 point per 0.02 at 0.5)."""
    rows = []
    for s in range(seeds):
        for p in ps:
            g = gap + growth * (p - 0.95)
            metrics = {"probe/feature2/pre": pre + JIT[s], "probe/feature2/post": pre - g,
                       "probe/feature2/gap": g + JIT[s], POST_ERROR: error,
                       PRE_ERROR: 0.02}  # fmt: skip
            rows.append(trial(s, [0.0, 0.0, p, 0.0, 0.0], 0.0, PHI, np.square(PHI), **metrics))
    return pd.DataFrame(rows)


def t1(frame):
    return ts.t1_t2_square_root_law(frame, PHI)[0]


def t2(frame):
    return ts.t1_t2_square_root_law(frame, PHI)[1]


def t3(frame):
    return ts.t3_drop_lowers_post_faster(frame, PHI, 2, 0.9)


def t4(frame):
    return ts.t4_weight_decay_removes_weak_feature(frame, PHI, [0.0, 0.0, 0.9, 0.0, 0.0], 2)


def e5(frame):
    return ts.e5_probe_gap_near_one(frame, PHI)


def sign_flip(post=0.5, seeds=3) -> pd.DataFrame:
    rows = [{"seed": s, "target": "feature0", "sign_flip": "[0]", "pre": 0.9 + JIT[s],
             "post": post + JIT[s]} for s in range(seeds)]  # fmt: skip
    return probes(rows)


# --------------------------------------------------------------------------- image tables


def drop_rates(gap_of_p, seeds=3, control_digit=0.8) -> pd.DataFrame:
    rows = control(seeds, control_digit)
    for s in range(seeds):
        for p in (0.0, 0.5, 1.0):
            pre = 0.6 + JIT[s]
            rows.append({"seed": s, "model.head.name": "mlp", "aug.p_drop": p, "pre": pre,
                         "post": pre - gap_of_p(p) - JIT[s]})  # fmt: skip
    return probes(rows)


def decays(gap_of_wd, seeds=3) -> pd.DataFrame:
    rows = control(seeds)
    for s in range(seeds):
        for wd in (1e-5, 1e-4, 1e-3):
            gap = gap_of_wd(wd) + JIT[s]
            rows.append({"seed": s, "model.head.name": "mlp", "optim.weight_decay": wd,
                         "aug.p_drop": 0.6, "pre": 0.6, "post": 0.6 - gap})  # fmt: skip
    return probes(rows)


def reweight(kappa_pre=0.55, seeds=3) -> pd.DataFrame:
    rows = [r | {"train.epochs": 10} for r in control(seeds)]
    for s in range(seeds):
        common = {"seed": s, "train.epochs": 10}
        rows += [
            {**common, "model.head.name": "mlp", "model.head.kappa": 1.05, "pre": 0.55 + JIT[s],
             "post": 0.45},
            {**common, "model.head.name": "fixed_reweight", "model.head.kappa": 1.0,
             "pre": 0.5 + JIT[s], "post": 0.5 + JIT[s]},
            {**common, "model.head.name": "fixed_reweight", "model.head.kappa": 1.2,
             "pre": kappa_pre + JIT[s], "post": kappa_pre - 0.1},
            {"seed": s, "train.epochs": 0, "model.head.name": "fixed_reweight",
             "model.head.kappa": 1.2, "pre": 0.3, "post": 0.2},
        ]  # fmt: skip
    return probes(rows)


def fine(gap, pre=0.6, seeds=3) -> pd.DataFrame:
    rows = [{"seed": s, "target": "fine", "model.head.name": "mlp", "loss.name": loss,
             "pre": pre + JIT[s], "post": pre - gap}
            for s in range(seeds) for loss in ("supcon", "cross_entropy")]  # fmt: skip
    return probes(rows)


def bottleneck(mi=-0.2, acc=0.01, structural=0.02, base=0.5, seeds=3) -> pd.DataFrame:
    """Trials of ouyang_bottleneck: baseline, MI lambda 0.5, discrete over L = 3, 5, 8 (rising
    to L = 5, then falling), top-k SAE."""
    methods = [("mlp", 0.0, 0.5, base, 5), ("mlp", 0.5, 0.5 + mi, base + acc, 5),
               ("discrete", 0.0, 0.4, base + structural - 0.05, 3),
               ("discrete", 0.0, 0.4, base + structural, 5),
               ("discrete", 0.0, 0.4, base + structural - 0.03, 8),
               ("topk_sae", 0.0, 0.4, base + structural, 5)]  # fmt: skip
    rows = [{"status": "finished", "train.seed": s, "model.head.name": head,
             "loss.mi_lambda": lam, "model.head.levels": levels, "train.epochs": 8,
             "model.head.k_per_dim": 1.953125, "train/mi": i2 + JIT[s],
             "probe/digit/pre": a + JIT[s]}
            for s in range(seeds) for head, lam, i2, a, levels in methods]  # fmt: skip
    return pd.DataFrame(rows)


def heads(gap, seeds=3, untrained=0.0) -> pd.DataFrame:
    """Trained heads with a pre - post gap, beside untrained ones (epochs 0) with theirs."""
    rows = [r | {"train.epochs": 8} for r in control(seeds)]
    for s in range(seeds):
        for head in ("mlp", "discrete"):
            for epochs, g in ((8, gap), (0, untrained)):
                row = {"seed": s, "model.head.name": head, "aug.p_drop": 0.0}
                rows.append(row | {"train.epochs": epochs, "pre": 0.6 + JIT[s], "post": 0.6 - g})
    return probes(rows)


CALIBRATED, UNCALIBRATED = probes(control()), probes(control(digit=0.3))

# check name -> (how to run it on a table, and for each outcome: table, text in the evidence,
# text in the reason). Every check has all three outcomes.
Case = tuple[Callable[[], Verdict], str, str, str]
CASES: dict[str, Case] = {
    "T1-held": (lambda: t1(linear()), HELD, "slope +0.500", ""),
    "T1-failed": (lambda: t1(linear(slope=0.7)), FAILED, "slope +0.700", "within 0.5"),
    "T1-inconclusive": (lambda: t1(linear(seeds=2)), INCONCLUSIVE, "(n=2)", "2 seed(s)"),
    "T2-held": (lambda: t2(linear()), HELD, "post - pre +1.6", ""),
    "T2-failed": (lambda: t2(linear(spread_pre=True)), FAILED, "post - pre -1.6", "spread"),
    "T2-inconclusive": (lambda: t2(linear(seeds=2)), INCONCLUSIVE, "(n=2)", "2 seed(s)"),
    "T3-held": (lambda: t3(linear()), HELD, "post × 0.500, pre × 0.800", ""),
    "T3-failed": (
        lambda: t3(linear(factor=(0.8, 0.5))),
        FAILED,
        "post × 0.800, pre × 0.500",
        "post factor below pre",
    ),
    "T3-inconclusive": (lambda: t3(linear(seeds=2)), INCONCLUSIVE, "pre × 0.800", "2 seed(s)"),
    "T4-held": (lambda: t4(linear()), HELD, "wd=0.01: pre 0.000, post 0.000", ""),
    "T4-failed": (lambda: t4(linear(weak=0.2)), FAILED, "wd=0.01: pre 0.096", "gone"),
    "T4-inconclusive": (lambda: t4(linear(seeds=2)), INCONCLUSIVE, "wd=0:", "2 seed(s)"),
    "T5-held": (lambda: ts.t5_sign_flip(sign_flip()), HELD, "pre - chance +40.0 pts", ""),
    "T5-failed": (
        lambda: ts.t5_sign_flip(sign_flip(post=0.7)),
        FAILED,
        "post - chance +20.0 pts",
        "near chance",
    ),
    "T5-inconclusive": (
        lambda: ts.t5_sign_flip(sign_flip(seeds=2)),
        INCONCLUSIVE,
        "(n=2)",
        "2 seed(s)",
    ),
    "E5-held": (lambda: e5(near_one()), HELD, "p=0.99: gap +7.0 pts", ""),
    "E5-failed": (lambda: e5(near_one(gap=-0.02)), FAILED, "p=0.95: gap -2.0 pts", "above 0"),
    "E5-inconclusive": (
        lambda: e5(near_one(error=0.12)),
        INCONCLUSIVE,
        "within 12.0% of the closed form",
        "not converged: post weights up to 12.0%",
    ),
    "T6-held": (
        lambda: trends.t6_gap_grows_with_drop_rate(drop_rates(lambda p: 0.01 + 0.1 * p)),
        HELD,
        "p=1: +11.0 pts",
        "",
    ),
    "T6-failed": (
        lambda: trends.t6_gap_grows_with_drop_rate(drop_rates(lambda p: 0.05)),
        FAILED,
        "p=1: +5.0 pts",
        "clear margin",
    ),
    "T6-inconclusive": (
        lambda: trends.t6_gap_grows_with_drop_rate(
            drop_rates(lambda p: 0.01 + 0.1 * p, control_digit=0.3)
        ),
        INCONCLUSIVE,
        "p=1: +11.0 pts",
        "probe 0.300",
    ),
    "T7-held": (
        lambda: trends.t7_gap_shrinks_with_weight_decay(decays(lambda w: -0.02 * np.log10(w))),
        HELD,
        "slope per decade -2.0 pts",
        "",
    ),
    "T7-failed": (
        lambda: trends.t7_gap_shrinks_with_weight_decay(decays(lambda w: 0.2 + 0.02 * np.log10(w))),
        FAILED,
        "slope per decade +2.0 pts",
        "below 0",
    ),
    "T7-inconclusive": (
        lambda: trends.t7_gap_shrinks_with_weight_decay(decays(lambda w: 0.0)),
        INCONCLUSIVE,
        "wd=1e-05: +0.0 pts",
        "no gap to shrink",
    ),
    "T8-held": (lambda: trends.t8_reweighting(reweight()), HELD, "κ=1.2: gap +10.0 pts", ""),
    "T8-failed": (
        lambda: trends.t8_reweighting(reweight(kappa_pre=0.47)),
        FAILED,
        "best κ pre - MLP pre -8.0 pts",
        "not worse",
    ),
    "T8-inconclusive": (
        lambda: trends.t8_reweighting(reweight(seeds=2)),
        INCONCLUSIVE,
        "untrained +10.0 pts",
        "2 seed(s)",
    ),
    "T9-held": (lambda: trends.t9_fine_gap(fine(0.06)), HELD, "supcon: gap +6.0 pts", ""),
    "T9-failed": (
        lambda: trends.t9_fine_gap(fine(0.015)),
        FAILED,
        "supcon: gap +1.5 pts",
        "clear margin",
    ),
    "T9-inconclusive": (
        lambda: trends.t9_fine_gap(fine(0.06, pre=0.99)),
        INCONCLUSIVE,
        "supcon: gap +6.0 pts",
        "ceiling (0.990",
    ),
    "T10-held": (
        lambda: tb.t10_mi_regulariser(bottleneck(), "digit", CALIBRATED),
        HELD,
        "MI λ=0.5: ΔI₂ -0.2",
        "",
    ),
    "T10-failed": (
        lambda: tb.t10_mi_regulariser(bottleneck(mi=0.1), "digit", CALIBRATED),
        FAILED,
        "ΔI₂ +0.1",
        "lowers I₂",
    ),
    "T10-inconclusive": (
        lambda: tb.t10_mi_regulariser(bottleneck(), "digit", UNCALIBRATED),
        INCONCLUSIVE,
        "Δdigit pre +1.0 pts",
        "probe 0.300",
    ),
    "T11-held": (
        lambda: tb.t11_structural_bottlenecks(bottleneck(), "digit", CALIBRATED),
        HELD,
        "discrete L=5: Δdigit pre +2.0 pts",
        "",
    ),
    "T11-failed": (
        lambda: tb.t11_structural_bottlenecks(bottleneck(structural=-0.06), "digit"),
        FAILED,
        "discrete L=5: Δdigit pre -6.0 pts",
        "reaches the baseline",
    ),
    "T11-inconclusive": (
        lambda: tb.t11_structural_bottlenecks(bottleneck(base=0.98), "digit", CALIBRATED),
        INCONCLUSIVE,
        "best structural - best MI gain +1.0 pts",
        "ceiling",
    ),
    "T12-held": (
        lambda: tb.t12_encoder_beats_projector(heads(0.05), "digit"),
        HELD,
        "mlp: +5.0 pts",
        "",
    ),
    "T12-failed": (
        lambda: tb.t12_encoder_beats_projector(heads(0.05, untrained=0.145), "digit"),
        FAILED,
        "(untrained +14.5",
        "above the untrained mlp's",
    ),
    "T12-inconclusive": (
        lambda: tb.t12_encoder_beats_projector(heads(0.05, seeds=2), "digit"),
        INCONCLUSIVE,
        "mlp: +4.8 pts",  # two seeds: the jitter's mean is -0.2 points
        "2 seed(s)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_outcome_and_its_number(case):
    run, outcome, evidence, reason = CASES[case]
    verdict = run()
    assert verdict.name == case.split("-")[0]
    assert verdict.outcome == outcome, verdict.line()
    assert evidence in verdict.evidence, verdict.line()
    assert reason in verdict.reason and (outcome == HELD) == (verdict.reason == ""), verdict.line()


def test_t10_fails_when_the_best_lambda_loses_accuracy():
    """[O]'s claim is a gain: at the best λ of the grid (a selection) the pre probe must rise;
    lowering I₂ alone is guaranteed by the term itself."""
    verdict = tb.t10_mi_regulariser(bottleneck(acc=-0.05), "digit", CALIBRATED)
    assert verdict.outcome == FAILED and "raises digit pre" in verdict.reason, verdict.line()


def test_t11_judges_the_best_setting_and_the_shape():
    """Discrete L = 3 at -3 points and L = 8 at -1 leave L = 5 the best (a selection); the
    over-strong end no longer fails the trend, and a best setting at the grid's end leaves the
    shape unresolved."""
    verdict = tb.t11_structural_bottlenecks(bottleneck(), "digit", CALIBRATED)
    assert verdict.outcome == HELD and "discrete L=3: Δdigit pre -3.0 pts" in verdict.evidence
    edge = bottleneck()
    edge.loc[edge["model.head.levels"] == 8, "probe/digit/pre"] += 0.2
    verdict = tb.t11_structural_bottlenecks(edge, "digit", CALIBRATED)
    assert verdict.outcome == INCONCLUSIVE and "at the grid's end" in verdict.reason


def test_e5_needs_the_gap_to_grow_with_p():
    """E5's stronger half: a gap above 0 at every p that does not grow is not held."""
    flat = e5(near_one(growth=0.0))
    assert flat.outcome != HELD and "grows with p" in flat.reason, flat.line()
    shrinking = e5(near_one(gap=0.1, growth=-1.0))
    assert shrinking.outcome == FAILED and "grows with p" in shrinking.reason, shrinking.line()


def test_every_check_has_every_outcome():
    names = [f"T{i}" for i in range(1, 13)] + ["E5"]
    outcomes = (HELD, FAILED, INCONCLUSIVE)
    assert sorted(CASES) == sorted(f"{n}-{o}" for n in names for o in outcomes)
    assert all(CASES[f"{n}-{o}"][1] == o for n in names for o in outcomes)


def test_linear_sweep_runs_e5_beside_t1_to_t4():
    """The synthetic experiment's checks: T3/T4 stay on p_2 = 0.9 when the sweep also holds
    E5's p >= 0.95 trials, E5 is judged on those, and sweeps without them get no E5 line."""
    both = pd.concat([linear(), near_one()], ignore_index=True)
    no_probes = pd.DataFrame({"target": ["feature0"]})
    verdicts = {v.name: v for v in trends.check("xue_synthetic_linear", no_probes, both)}
    assert list(verdicts) == ["T1", "T2", "T3", "T4", "E5"]
    assert "p 0 → 0.9:" in verdicts["T3"].evidence and verdicts["T3"].outcome == HELD
    assert verdicts["E5"].outcome == HELD and "p=0.97: gap +6.0 pts" in verdicts["E5"].evidence
    old = trends.check("xue_synthetic_linear", no_probes, linear())
    assert [v.name for v in old] == ["T1", "T2", "T3", "T4"]


def test_phi_ties_go_to_the_first_trial():
    """A swept phi axis gives each value the same count: the first in trial order (the spec's
    first grid value) is the one judged, not the smallest (phi_2 0.3 never converges for E5)."""
    frame = pd.DataFrame({"phi": [json.dumps([1.0, 0.6]), json.dumps([1.0, 0.3])] * 2})
    assert ts.phi_of(frame) == [1.0, 0.6]
    frame = pd.DataFrame({"phi": [json.dumps([1.0, 0.3])] + [json.dumps([1.0, 0.6])] * 2})
    assert ts.phi_of(frame) == [1.0, 0.6]  # a majority still wins


def test_e5_without_its_trials_or_seeds_is_inconclusive():
    none = e5(linear())
    assert none.outcome == INCONCLUSIVE and "no single-feature drop p >= 0.95" in none.reason
    few = e5(near_one(seeds=2))
    assert few.outcome == INCONCLUSIVE and "2 seed(s)" in few.reason and "(n=2)" in few.evidence
    ceiling = e5(near_one(pre=0.99))
    assert ceiling.outcome == INCONCLUSIVE and "feature 2 probe at ceiling (0.990" in ceiling.reason
    unknown = e5(near_one().drop(columns=[POST_ERROR]))
    assert unknown.outcome == INCONCLUSIVE and "cannot tell convergence" in unknown.reason


def test_a_sweep_without_its_own_control_is_judged_on_the_control_trained_before_it():
    """T7's and the bottleneck's grids hold no control (head none, p_drop 0): `headsweep
    reproduce` trains it first, and its calibration stands in; none at all -> inconclusive."""
    from analysis.verdicts import Calibration

    grid = decays(lambda w: -0.02 * np.log10(w))
    grid = grid[grid["model.head.name"] != "none"]
    no_trials = pd.DataFrame()
    alone = trends.check("xue_digits", grid, no_trials)[0]
    assert alone.outcome == "inconclusive" and "no control trial" in alone.reason
    passed = Calibration(True, "separate control: PASS (digit 0.7)")
    assert trends.check("xue_digits", grid, no_trials, passed)[0].outcome == "held"
    failed = Calibration(False, "separate control: FAIL", ("separate control: FAIL (digit 0.2)",))
    verdict = trends.check("xue_digits", grid, no_trials, failed)[0]
    assert verdict.outcome == "inconclusive" and "digit 0.2" in verdict.reason
    # the sweep's own control wins over a separate one
    own = trends.check("xue_digits", decays(lambda w: -0.02 * np.log10(w)), no_trials, failed)
    assert own[0].outcome == "held"
