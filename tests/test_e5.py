"""E5 (docs/science.md §10): the probe gap of a feature augmentation drops with p near 1, judged
only at convergence. Checks that the closed-form optimum the convergence is measured against is
the minimum (found independently by numerical minimisation), that every linear trial records
its distance from it, that the shipped spec runs the p >= 0.95 trials long enough to reach it,
and that real runs reach a held/failed verdict when converged and an inconclusive one when not.
About 20 s on one core."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from analysis.tables import build_tables
from analysis.trends_synthetic import CONVERGED, e5_probe_gap_near_one, phi_of
from analysis.trials import Trial
from analysis.verdicts import FAILED, HELD, INCONCLUSIVE
from headsweep import metrics as M
from headsweep.synthetic import (
    population_gradient,
    population_loss,
    population_moments,
    theory_post_weight,
)
from headsweep.synthetic_config import (
    POST_ERROR,
    PRE_ERROR,
    THEORY,
    SyntheticConfig,
    relative_errors,
)
from sweeps.spec import load_spec
from trainables.synthetic import run_local

PHI = (1.0, 0.8, 0.6, 0.4, 0.2)
OPTIONS = {"maxiter": 2_000, "gtol": 1e-10}
SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "xue_synthetic_linear.yaml"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # 20 x 20 matrices: intra-op threads only add contention on two shared cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def numerical_minimum(cfg: SyntheticConfig, out: int, starts: int = 2) -> tuple[np.ndarray, float]:
    """Per-feature ||W e_k|| and loss of the best of several trust-region Newton runs on the
    population loss from random W: (out, dim), independent of the closed form's derivation.
    Newton, not L-BFGS: a feature with p near 1 has a tiny c_k, a flat direction first-order
    methods crawl along (L-BFGS needed ~40 s to get within 1e-8)."""
    m, sigma = population_moments(cfg)
    rng = np.random.default_rng(0)

    def loss(w: torch.Tensor) -> torch.Tensor:
        return population_loss(w.reshape(out, cfg.dim), m, sigma)

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = population_gradient(torch.from_numpy(flat.reshape(out, cfg.dim)), m, sigma)
        return float(value), grad.numpy().ravel()

    def hess(flat: np.ndarray) -> np.ndarray:
        return torch.autograd.functional.hessian(loss, torch.from_numpy(flat)).numpy()

    best = None
    for _ in range(starts):
        x0 = 0.3 * rng.standard_normal(out * cfg.dim)
        res = minimize(fun, x0, jac=True, hess=hess, method="trust-exact", options=OPTIONS)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    w = best.x.reshape(out, cfg.dim)
    return np.linalg.norm(w[:, : cfg.features], axis=0), float(best.fun)


@pytest.mark.parametrize(
    ("drop", "flip", "out"),
    [
        ((0.0, 0.0, 0.99, 0.0, 0.0), (), 8),  # E5's feature: p near 1, c_2 small but positive
        ((0.3, 0.0, 0.95, 0.6, 0.0), (), 8),
        ((0.0, 0.0, 0.5, 0.0, 0.0), (1,), 8),  # a sign flip makes M_11 < 0: the optimum drops it
        ((0.0, 0.0, 0.97, 0.0, 0.0), (), 3),  # rank 3 < K: only the 3 largest c_k survive
    ],
)
def test_closed_form_is_the_numerical_minimum(drop, flip, out):
    """||W e_k|| = sqrt(max(M_k, 0)) / Sigma_k on the top-r features by c_k = M_k / Sigma_k,
    loss -sum c_k^2: with B = Sigma^1/2 W^T W Sigma^1/2 the loss is ||B - C||_F^2 - ||C||_F^2,
    C = diag(c), so B is C's best PSD rank-r approximation (its top-r positive part)."""
    cfg = SyntheticConfig(
        phi=PHI, noise=0.1, feature_drop=drop, sign_flip=flip, width=out, out_dim=out, dim=8
    )  # 3 noise coordinates, not 15: a smaller Hessian, the same closed form
    theory, optimum = theory_post_weight(cfg)
    weights, loss = numerical_minimum(cfg, out)
    assert loss == pytest.approx(optimum, rel=1e-8)  # and never below it: it is the minimum
    # Closed form with the hint's formula, written out independently of theory_post_weight.
    m, sigma = (t.numpy() for t in population_moments(cfg))
    c = m / sigma
    top = set(np.argsort(-c)[:out][c[np.argsort(-c)[:out]] > 0])
    expected = [math.sqrt(max(m[k], 0)) / sigma[k] if k in top else 0.0 for k in range(5)]
    np.testing.assert_allclose(theory, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-5)
    if flip:
        assert theory[flip[0]] == 0.0
    if out < 5:
        assert sum(t > 0 for t in theory) == out


def test_relative_errors_of_a_dropped_feature_use_the_largest_weight():
    assert relative_errors((1.1, 0.5, 0.2), (1.0, 0.5, 0.0)) == pytest.approx((0.1, 0.0, 0.2))


def test_linear_trials_record_their_distance_from_the_closed_form():
    cfg = SyntheticConfig(phi=PHI, feature_drop=(0, 0, 0.99, 0, 0), steps=300)
    metrics = run_local(cfg).metrics
    theory, _ = theory_post_weight(cfg)
    for k in range(5):
        assert metrics[M.weight(THEORY, k)] == pytest.approx(theory[k])
    errors = [abs(metrics[M.weight("post", k)] - theory[k]) / theory[k] for k in range(5)]
    assert metrics[POST_ERROR] == pytest.approx(max(errors))
    assert metrics[POST_ERROR] > 0.5  # 300 steps: feature 2 has not left the saddle
    assert 0 <= metrics[PRE_ERROR] < 1
    # No closed form with weight decay or for the ReLU model: nothing recorded.
    decayed = run_local(SyntheticConfig(phi=PHI, weight_decay=0.01, steps=50)).metrics
    relu = run_local(SyntheticConfig(model="relu", mode="sampled", steps=20)).metrics
    for metrics in (decayed, relu):
        assert POST_ERROR not in metrics and M.weight(THEORY, 0) not in metrics


def e5_configs(seeds=(0, 1, 2)) -> list[SyntheticConfig]:
    """The shipped spec's E5 trials (p_2 >= 0.95 at the spec's phi, no weight decay)."""
    spec = load_spec(SPEC)
    out = []
    for point in spec.points():
        cfg = spec.settings(point)
        assert isinstance(cfg, SyntheticConfig)
        near_one = max(cfg.feature_drop or (0,)) >= 0.95
        if cfg.phi == PHI and cfg.weight_decay == 0 and near_one and cfg.seed in seeds:
            out.append(cfg)
    return out


def test_shipped_spec_runs_e5_long_enough_to_converge():
    """Every p >= 0.95 of the spec ends within 5% of the closed form (seed 0; seeds 1-2 of
    p = 0.99, the slowest, in the verdict test below)."""
    configs = e5_configs(seeds=(0,))
    assert sorted(max(c.feature_drop) for c in configs) == [0.95, 0.97, 0.99]
    for cfg in configs:
        if max(cfg.feature_drop) < 0.99:
            error = run_local(cfg).metrics[POST_ERROR]
            assert error < CONVERGED / 2, (cfg.feature_drop, cfg.steps, error)


def judge(configs: list[SyntheticConfig]):
    trials = []
    for i, cfg in enumerate(configs):
        record = run_local(cfg)
        trials.append(Trial(f"t{i}", "finished", dict(record.config), cfg.seed, record))
    frame = build_tables("e5", trials, {}, "seed")["trials"].to_pandas()
    return e5_probe_gap_near_one(frame, phi_of(frame)), frame


def test_e5_on_real_runs_converged_and_not():
    slowest = [c for c in e5_configs() if max(c.feature_drop) == 0.99]
    assert len(slowest) == 3
    verdict, frame = judge(slowest)
    assert (frame[POST_ERROR] < CONVERGED).all(), frame[POST_ERROR].tolist()
    assert verdict.outcome in (HELD, FAILED), verdict.line()  # judged: converged, 3 seeds
    assert "p=0.99: gap +" in verdict.evidence
    # The same trials stopped early sit near the saddle: inconclusive, never judged.
    early = [dataclasses.replace(c, steps=2000) for c in slowest]
    verdict, _ = judge(early)
    assert verdict.outcome == INCONCLUSIVE and "not converged" in verdict.reason, verdict.line()
