"""The trend checks judge hand-made tables with known answers both ways."""

import itertools

import pandas as pd

from analysis import trends


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


def digits(gap_of_p):
    rows = []
    for seed, p in itertools.product(range(3), (0.0, 0.5, 1.0)):
        pre = 0.6 - 0.1 * p + 0.01 * seed
        rows.append(
            {
                "seed": seed,
                "model.head.name": "mlp",
                "aug.p_drop": p,
                "pre": pre,
                "post": pre - gap_of_p(p, seed),
            }
        )
    return probes(rows)


def test_t6_holds_when_the_gap_grows_and_not_otherwise():
    assert trends.t6_gap_grows_with_drop_rate(digits(lambda p, s: 0.01 + 0.1 * p)).holds
    assert not trends.t6_gap_grows_with_drop_rate(digits(lambda p, s: 0.05)).holds
    shrinking = digits(lambda p, s: 0.1 - 0.05 * p)
    assert not trends.t6_gap_grows_with_drop_rate(shrinking).holds


def test_t8_needs_exact_identity_at_kappa_one():
    rows = []
    for seed in range(3):
        rows.append(
            {
                "seed": seed,
                "model.head.name": "mlp",
                "model.head.kappa": 1.05,
                "pre": 0.5,
                "post": 0.4,
            }
        )
        rows.append(
            {
                "seed": seed,
                "model.head.name": "fixed_reweight",
                "model.head.kappa": 1.0,
                "pre": 0.45,
                "post": 0.45,
            }
        )
        rows.append(
            {
                "seed": seed,
                "model.head.name": "fixed_reweight",
                "model.head.kappa": 1.2,
                "pre": 0.49 + 0.01 * seed,
                "post": 0.42,
            }
        )
    assert trends.t8_reweighting(probes(rows)).holds
    rows[1]["post"] = 0.44  # kappa = 1 must be the identity: any gap there is a bug
    assert not trends.t8_reweighting(probes(rows)).holds


def test_t10_requires_lower_i2_in_every_seed():
    rows = []
    for seed in range(3):
        for lam, mi, acc in ((0.0, 0.5, 0.50 + 0.01 * seed), (0.5, 0.3, 0.51 + 0.01 * seed)):
            rows.append(
                {
                    "status": "finished",
                    "train.seed": seed,
                    "model.head.name": "mlp",
                    "loss.mi_lambda": lam,
                    "model.head.levels": 5,
                    "model.head.k": 20,
                    "train/mi": mi,
                    "probe/digit/pre": acc,
                }
            )
    frame = pd.DataFrame(rows)
    assert trends.t10_mi_regulariser(frame, "digit").holds
    frame.loc[frame["loss.mi_lambda"] > 0, "train/mi"] = 0.6
    assert not trends.t10_mi_regulariser(frame, "digit").holds
