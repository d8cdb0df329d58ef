"""Every trend check judges hand-made tables with known answers in all three outcomes: held,
failed, and inconclusive (too few seeds, ceiling, or an uncalibrated instrument)."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from analysis import trends, trends_synthetic, verdicts
from analysis import trends_bottleneck as tb
from analysis.verdicts import FAILED, HELD, INCONCLUSIVE

JITTER = (0.0, 0.004, -0.003, 0.002)  # per-seed noise, so intervals have a width


def probes(rows):
    out = []
    for i, row in enumerate(rows):
        for tap in ("pre", "post"):
            out.append(
                {
                    "trial_id": f"t{i}",
                    "seed": row["seed"],
                    "target": row.get("target", "digit"),
                    "tap": tap,
                    "accuracy": row[tap],
                    **{k: v for k, v in row.items() if k not in ("pre", "post", "target")},
                }
            )
    return pd.DataFrame(out)


def control(seeds=3, digit=0.8, extra=None):
    """The calibration control: head none at p_drop 0 (pre = post)."""
    return [
        {"seed": s, "model.head.name": "none", "aug.p_drop": 0.0, "pre": digit, "post": digit}
        | (extra or {})
        for s in range(seeds)
    ]


def digits(gap_of_p, seeds=3, base=0.6, control_digit=0.8, with_control=True):
    rows = control(seeds, control_digit) if with_control else []
    for seed, p in itertools.product(range(seeds), (0.0, 0.5, 1.0)):
        pre = base - 0.1 * p + JITTER[seed]
        gap = gap_of_p(p, seed) + JITTER[seed] / 2
        rows.append(
            {"seed": seed, "model.head.name": "mlp", "aug.p_drop": p, "pre": pre, "post": pre - gap}
        )
    return probes(rows)


def outcome(verdict):
    return verdict.outcome


def test_interval_and_rule_primitives():
    iv = verdicts.interval([0.08, 0.09, 0.07])
    assert iv.mean == pytest.approx(0.08) and iv.low < 0.08 < iv.high and iv.n == 3
    assert verdicts.clear_margin(iv) and verdicts.above(iv) and not verdicts.comparable(iv)
    small = verdicts.interval([0.01, -0.01, 0.0])
    assert verdicts.comparable(small) and not verdicts.above(small) and verdicts.not_worse(small)
    assert np.isnan(verdicts.interval([0.1]).low)


def test_t6_three_outcomes():
    t6 = trends.t6_gap_grows_with_drop_rate
    assert outcome(t6(digits(lambda p, s: 0.01 + 0.1 * p))) == HELD
    flat = t6(digits(lambda p, s: 0.05))
    assert outcome(flat) == FAILED and "clear margin" in flat.reason
    # growing, but the gap at p_drop 0 is not small (8 points, over a third of 15)
    big_start = t6(digits(lambda p, s: 0.08 + 0.07 * p))
    assert outcome(big_start) == FAILED and "small" in big_start.reason
    assert outcome(t6(digits(lambda p, s: 0.1 - 0.05 * p))) == FAILED
    assert "seed" in t6(digits(lambda p, s: 0.01 + 0.1 * p, seeds=2)).reason
    uncalibrated = t6(digits(lambda p, s: 0.01 + 0.1 * p, control_digit=0.3))
    assert outcome(uncalibrated) == INCONCLUSIVE and "learned no digit" in uncalibrated.reason
    assert outcome(t6(digits(lambda p, s: 0.01 + 0.1 * p, with_control=False))) == INCONCLUSIVE
    ceiling = t6(digits(lambda p, s: 0.01 + 0.01 * p, base=0.985))
    assert outcome(ceiling) == INCONCLUSIVE and "ceiling" in ceiling.reason


def weight_decay(gap_of_wd, seeds=3):
    rows = control(seeds)
    for seed, wd in itertools.product(range(seeds), (1e-5, 1e-4, 1e-3)):
        pre = 0.6 + JITTER[seed]
        gap = gap_of_wd(wd) + JITTER[seed] / 2
        rows.append(
            {
                "seed": seed,
                "model.head.name": "mlp",
                "optim.weight_decay": wd,
                "aug.p_drop": 0.6,
                "pre": pre,
                "post": pre - gap,
            }
        )
    return probes(rows)


def test_t7_three_outcomes():
    t7 = trends.t7_gap_shrinks_with_weight_decay
    assert outcome(t7(weight_decay(lambda wd: -0.02 * np.log10(wd)))) == HELD  # 0.10 .. 0.06
    assert outcome(t7(weight_decay(lambda wd: 0.2 + 0.02 * np.log10(wd)))) == FAILED
    no_gap = t7(weight_decay(lambda wd: 0.0))
    assert outcome(no_gap) == INCONCLUSIVE and "no gap to shrink" in no_gap.reason
    assert outcome(t7(weight_decay(lambda wd: -0.02 * np.log10(wd), seeds=2))) == INCONCLUSIVE
    one_seed = t7(weight_decay(lambda wd: -0.02 * np.log10(wd), seeds=1))
    assert outcome(one_seed) == INCONCLUSIVE and "need >= 3" in one_seed.reason
    assert "no gap to shrink" not in one_seed.reason  # a +10-point gap without an interval


def reweight(kappa_pre=0.55, identity_gap=0.0, seeds=3, untrained=True):
    rows = control(seeds)
    for seed in range(seeds):
        j = JITTER[seed]
        rows += [
            {"seed": seed, "model.head.name": "mlp", "model.head.kappa": 1.05,
             "pre": 0.55 + j, "post": 0.45},
            {"seed": seed, "model.head.name": "fixed_reweight", "model.head.kappa": 1.0,
             "pre": 0.5 + j, "post": 0.5 + j - identity_gap},
            {"seed": seed, "model.head.name": "fixed_reweight", "model.head.kappa": 1.2,
             "pre": kappa_pre + j, "post": 0.45},
        ]  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["train.epochs"] = 10
    if untrained:
        cold = [
            {"seed": s, "model.head.name": "fixed_reweight", "model.head.kappa": 1.2,
             "pre": 0.3, "post": 0.2, "train.epochs": 0}
            for s in range(seeds)
        ]  # fmt: skip
        frame = pd.concat([frame, pd.DataFrame(cold)], ignore_index=True)
    return probes(frame.to_dict("records"))


def test_t8_three_outcomes_and_the_untrained_control():
    held = trends.t8_reweighting(reweight())
    assert outcome(held) == HELD and "untrained +10.0 pts" in held.evidence
    # kappa = 1 must be the identity: any gap there is a bug
    assert outcome(trends.t8_reweighting(reweight(identity_gap=0.01))) == FAILED
    worse = trends.t8_reweighting(reweight(kappa_pre=0.47))  # 8 points below the MLP head
    assert outcome(worse) == FAILED and "not worse" in worse.reason
    assert outcome(trends.t8_reweighting(reweight(seeds=2))) == INCONCLUSIVE
    assert "no untrained control" in trends.t8_reweighting(reweight(untrained=False)).evidence


def coarse_fine(gap, pre=0.6, seeds=3):
    rows = []
    for seed, loss in itertools.product(range(seeds), ("supcon", "cross_entropy")):
        rows.append(
            {
                "seed": seed,
                "target": "fine",
                "model.head.name": "mlp",
                "loss.name": loss,
                "pre": pre + JITTER[seed],
                "post": pre - gap,
            }
        )
    return probes(rows)


def test_t9_three_outcomes():
    assert outcome(trends.t9_fine_gap(coarse_fine(0.06))) == HELD
    small = trends.t9_fine_gap(coarse_fine(0.015))  # above 0 but not a clear margin
    assert outcome(small) == FAILED and "clear margin" in small.reason
    assert outcome(trends.t9_fine_gap(coarse_fine(0.06, pre=0.99))) == INCONCLUSIVE
    assert outcome(trends.t9_fine_gap(coarse_fine(0.06, seeds=2))) == INCONCLUSIVE


def bottleneck(mi_delta=-0.2, acc_delta=0.01, structural_delta=0.02, seeds=3, base_acc=0.5):
    rows = []
    methods = [
        ("mlp", 0.0, 0.5, base_acc, 5),
        ("mlp", 0.5, 0.5 + mi_delta, base_acc + acc_delta, 5),
        ("discrete", 0.0, 0.4, base_acc + structural_delta - 0.05, 3),
        ("discrete", 0.0, 0.4, base_acc + structural_delta, 5),
        ("discrete", 0.0, 0.4, base_acc + structural_delta - 0.03, 8),
        ("topk_sae", 0.0, 0.4, base_acc + structural_delta, 5),
    ]
    for seed in range(seeds):
        for head, lam, mi, acc, levels in methods:
            rows.append(
                {
                    "status": "finished",
                    "train.seed": seed,
                    "model.head.name": head,
                    "loss.mi_lambda": lam,
                    "model.head.levels": levels,
                    "model.head.k_per_dim": 1.953125,
                    "train/mi": mi + JITTER[seed],
                    "probe/digit/pre": acc + JITTER[seed] * (1 + (head != "mlp")),
                }
            )
    return pd.DataFrame(rows)


def test_t10_three_outcomes():
    calibrated = probes(control())
    assert outcome(tb.t10_mi_regulariser(bottleneck(), "digit", calibrated)) == HELD
    higher = tb.t10_mi_regulariser(bottleneck(mi_delta=0.1), "digit", calibrated)
    assert outcome(higher) == FAILED and "lowers I₂" in higher.reason
    lossy = tb.t10_mi_regulariser(bottleneck(acc_delta=-0.08), "digit", calibrated)
    assert outcome(lossy) == FAILED and "raises" in lossy.reason
    assert outcome(tb.t10_mi_regulariser(bottleneck(seeds=2), "digit", calibrated)) == (
        INCONCLUSIVE
    )
    uncalibrated = probes(control(digit=0.2))
    assert outcome(tb.t10_mi_regulariser(bottleneck(), "digit", uncalibrated)) == (INCONCLUSIVE)


def test_t11_three_outcomes():
    calibrated = probes(control())
    assert outcome(tb.t11_structural_bottlenecks(bottleneck(), "digit", calibrated)) == HELD
    behind = bottleneck(structural_delta=-0.06)
    assert outcome(tb.t11_structural_bottlenecks(behind, "digit", calibrated)) == FAILED
    ceiling = bottleneck(base_acc=0.98)
    assert outcome(tb.t11_structural_bottlenecks(ceiling, "digit", calibrated)) == (INCONCLUSIVE)


def heads(gap, seeds=3, pre=0.6, untrained=0.0):
    """Trained heads (epochs 8) and, beside each, the untrained network of its shape."""
    rows = [r | {"train.epochs": 8} for r in control(seeds)]
    for seed, head in itertools.product(range(seeds), ("mlp", "discrete")):
        for epochs, g in ((8, gap), (0, untrained)):
            rows.append(
                {
                    "seed": seed,
                    "model.head.name": head,
                    "aug.p_drop": 0.0,
                    "train.epochs": epochs,
                    "pre": pre + JITTER[seed],
                    "post": pre - g + 2 * JITTER[seed],
                }
            )
    return probes(rows)


def test_t12_three_outcomes():
    assert outcome(tb.t12_encoder_beats_projector(heads(0.05), "digit")) == HELD
    assert outcome(tb.t12_encoder_beats_projector(heads(-0.02), "digit")) == FAILED
    # beyond the untrained network's own gap, not just above 0
    assert outcome(tb.t12_encoder_beats_projector(heads(0.05, untrained=0.145), "digit")) == FAILED
    without = heads(0.05)
    without = without[without["train.epochs"] > 0]
    assert "no untrained control" in tb.t12_encoder_beats_projector(without, "digit").reason
    assert outcome(tb.t12_encoder_beats_projector(heads(0.05, seeds=2), "digit")) == (INCONCLUSIVE)


def test_calibration_rule():
    ok = verdicts.calibrate(probes(control()))
    assert ok.ok and "PASS" in ok.line()
    low = verdicts.calibrate(probes(control(digit=0.3)))
    assert low.ok is False and "learned no digit" in low.line()
    assert verdicts.calibrate(digits(lambda p, s: 0.0, with_control=False)).ok is None
    at_ceiling = probes(control() + [r | {"target": "object", "pre": 0.99, "post": 0.99}
                                     for r in control()])  # fmt: skip
    assert "object at ceiling" in verdicts.calibrate(at_ceiling).line()


# --------------------------------------------------------------------------- synthetic


def synthetic_trials(slope=0.5, seeds=3, drop_factor=(0.5, 0.8), weak_post=0.001):
    """Trials of xue_synthetic_linear's shape: base (no drop), feature 2 raised to 0.9, and a
    weight-decay series at that drop."""
    phi = [1.0, 0.8, 0.6, 0.4, 0.2]
    rows = []

    def trial(seed, drop, wd, pre, post):
        row = {
            "status": "finished",
            "seed": seed,
            "phi": json.dumps(phi),
            "feature_drop": json.dumps(drop),
            "weight_decay": wd,
            "synthetic/slope": slope + JITTER[seed],
            "synthetic/balancedness": 0.01,
        }
        for layer, w in (("pre", pre), ("post", post)):
            for k, v in enumerate(w):
                row[f"synthetic/{layer}_weight/{k}"] = v
                row[f"synthetic/{layer}_weight_norm/{k}"] = v / max(w)
        return row

    raised = [0.0, 0.0, 0.9, 0.0, 0.0]
    for seed in range(seeds):
        post = np.array(phi) ** 2 * (1 + JITTER[seed])
        pre = np.sqrt(post)
        rows.append(trial(seed, [0.0] * 5, 0.0, pre, post))
        post_r, pre_r = post.copy(), pre.copy()
        post_r[2] *= drop_factor[0]
        pre_r[2] *= drop_factor[1]
        rows.append(trial(seed, raised, 0.0, pre_r, post_r))
        for wd, weak in ((1e-3, 0.5), (1e-2, weak_post)):
            p2, q2 = post_r.copy(), pre_r.copy()
            p2[2], q2[2] = weak * post_r[2], weak * pre_r[2]
            rows.append(trial(seed, raised, wd, q2, p2))
    return pd.DataFrame(rows)


def synthetic_verdicts(**kw):
    probes = pd.DataFrame({"target": ["x"]})
    verdicts = trends.check("xue_synthetic_linear", probes, synthetic_trials(**kw))
    return {v.name: v.outcome for v in verdicts}


def test_synthetic_linear_three_outcomes():
    assert synthetic_verdicts() == {"T1": HELD, "T2": HELD, "T3": HELD, "T4": HELD}
    assert synthetic_verdicts(slope=0.7)["T1"] == FAILED
    assert synthetic_verdicts(drop_factor=(0.8, 0.5))["T3"] == FAILED
    assert synthetic_verdicts(weak_post=0.2)["T4"] == FAILED
    assert set(synthetic_verdicts(seeds=2).values()) == {INCONCLUSIVE}


def sign_flip(post, seeds=3):
    rows = [
        {"seed": s, "target": "feature0", "sign_flip": "[0]", "pre": 0.9 + JITTER[s],
         "post": post + JITTER[s]}
        for s in range(seeds)
    ]  # fmt: skip
    return probes(rows)


def test_t5_three_outcomes():
    t5 = trends_synthetic.t5_sign_flip
    assert outcome(t5(sign_flip(0.5))) == HELD
    assert outcome(t5(sign_flip(0.7))) == FAILED
    assert outcome(t5(sign_flip(0.5, seeds=2))) == INCONCLUSIVE
