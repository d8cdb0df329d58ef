"""Synthetic theory experiments of [X] (Xue et al., ICLR 2024; docs/science.md §4.1): the vector
data and its views, the closed-form population loss, and trends T1-T5 of docs/science.md §6.

Every trend test runs real training (population gradient descent for the linear model, SGD on
sampled views for the ReLU model) and checks the measured numbers against the theory; nothing
here is tuned to pass. The whole file takes ~20 s on one core.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics

import pytest
import torch

from headsweep.config import DataConfig
from headsweep.data.synthetic import embed, feature_views, synthetic
from headsweep.losses import spectral_contrastive
from headsweep.synthetic import (
    SyntheticConfig,
    population_gradient,
    population_loss,
    population_moments,
    run,
    theory_post_weight,
)

PHI = (1.0, 0.8, 0.6, 0.4, 0.2)  # distinct strengths: the post weights span a factor of 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The matrices are 20 x 20: intra-op threads only add contention on two shared cores
    # (measured: 70 us/step with one thread, up to 10 ms/step with two under load).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spread(values) -> float:
    return max(values) / min(values)


# --------------------------------------------------------------------------- data and views


def test_synthetic_dataset_holds_latents_and_sign_labels():
    data = synthetic(DataConfig(name="synthetic", n_train=300, n_test=0, phi=PHI, seed=3))
    assert data.kind == "vector" and data.name == "synthetic"
    assert data.train.inputs.shape == (300, 5) and data.train.inputs.dtype == torch.float32
    assert data.test.inputs.shape == (2000, 5)  # n_test = 0 means the default 2000
    assert data.classes == {f"feature{k}": 2 for k in range(5)}
    for k in range(5):
        label = data.train.labels[f"feature{k}"]
        assert label.dtype == torch.int64
        assert torch.equal(label, (data.train.inputs[:, k] > 0).long())
    again = synthetic(DataConfig(name="synthetic", n_train=300, n_test=0, phi=PHI, seed=3))
    assert torch.equal(again.train.inputs, data.train.inputs)
    other = synthetic(DataConfig(name="synthetic", n_train=300, n_test=0, phi=PHI, seed=4))
    assert not torch.equal(other.train.inputs, data.train.inputs)


def test_embed_places_scaled_features_and_applies_keep_and_flip():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    keep = torch.ones(6, 3, dtype=torch.bool)
    keep[0, 1] = False
    flip = torch.zeros(6, 3, dtype=torch.bool)
    flip[2, 0] = True
    x = embed(z, (2.0, 1.0, 0.5), 8, 0.0, torch.Generator().manual_seed(1), keep, flip)
    expected = torch.zeros(6, 8)
    expected[:, :3] = z * torch.tensor([2.0, 1.0, 0.5])
    expected[0, 1] = 0.0
    expected[2, 0] *= -1
    assert torch.equal(x, expected)
    noisy = embed(z, (2.0, 1.0, 0.5), 8, 0.3, torch.Generator().manual_seed(1))
    assert noisy[:, 3:].abs().sum() > 0  # noise coordinates carry noise only


def test_feature_views_drop_exactly_one_view_per_dropped_pair():
    n, p = 40_000, (0.0, 0.3, 1.0, 0.6)
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    x1, x2 = feature_views(z, (1.0,) * 4, 6, 0.0, p, (), torch.Generator().manual_seed(1))
    gone1, gone2 = x1[:, :4] == 0, x2[:, :4] == 0
    assert not (gone1 & gone2).any()  # never dropped from both views of a pair
    dropped = (gone1 | gone2).double().mean(0)
    for k in range(4):
        # 4 standard errors of a binomial proportion at n = 40,000 is <= 0.01.
        assert abs(float(dropped[k]) - p[k]) < 0.01, (k, dropped)
    # The view that loses the feature is chosen at random.
    share1 = float(gone1[:, 3].sum() / (gone1[:, 3] | gone2[:, 3]).sum())
    assert abs(share1 - 0.5) < 0.02
    kept = ~(gone1 | gone2)
    assert torch.equal(x1[:, :4][kept], x2[:, :4][kept])  # noise-free: kept features agree


def test_feature_views_sign_flip_and_independent_noise():
    n = 20_000
    z = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    x1, x2 = feature_views(z, (1.0, 1.0, 1.0), 5, 0.0, (), (1,), torch.Generator().manual_seed(2))
    assert torch.equal(x1[:, 1], -x2[:, 1])  # flipped in exactly one view of every pair
    assert torch.equal(x1[:, [0, 2]], x2[:, [0, 2]])
    share1 = float((x1[:, 1] == -z[:, 1]).double().mean())
    assert abs(share1 - 0.5) < 0.02
    y1, y2 = feature_views(z, (1.0, 1.0, 1.0), 5, 0.5, (), (), torch.Generator().manual_seed(2))
    difference = (y1 - y2).var(0)  # independent noise per view: Var = 2 sigma^2 everywhere
    assert torch.allclose(difference, torch.full((5,), 0.5), rtol=0.05)


def test_feature_views_are_deterministic_given_the_generator():
    z = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))

    def views(seed: int):
        return feature_views(z, PHI, 20, 0.1, (0.5,) * 5, (2,), torch.Generator().manual_seed(seed))

    a, b, c = views(7), views(7), views(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"lr": 0.0}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"feature_drop": [0.1, 0.2]}, "feature_drop"),
        ({"feature_drop": [0, 0, 0, 0, 1.5]}, "feature_drop"),
        ({"sign_flip": [5]}, "sign_flip"),
        ({"model": "relu", "mode": "population"}, "mode"),
        ({"model": "mlp"}, "model"),
        ({"dim": 3}, "dim"),
        ({"probe_penalty": 0}, "probe_penalty"),
        ({"batch_size": 1}, "batch_size"),
    ],
)
def test_config_errors_name_the_key(raw, key):
    with pytest.raises(ValueError, match=key):
        SyntheticConfig.from_dict(raw)
    with pytest.raises(ValueError, match=key):
        run(raw)


def test_config_from_dict_coerces_lists():
    cfg = SyntheticConfig.from_dict({"phi": [1, 0.5], "dim": 4, "sign_flip": [1]})
    assert cfg.phi == (1.0, 0.5) and cfg.sign_flip == (1,)


# --------------------------------------------------------------------------- population loss


def test_population_loss_is_the_expected_sampled_loss():
    """Monte-Carlo: the mean minibatch spectral contrastive loss of a fixed linear map matches
    the closed form, with feature drop and a sign flip both active."""
    cfg = SyntheticConfig(
        phi=PHI, noise=0.3, feature_drop=(0.2, 0.0, 0.7, 0.4, 1.0), sign_flip=(3,)
    )
    m, sigma = population_moments(cfg)
    w = 0.4 * torch.randn(8, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = float(population_loss(w, m, sigma))
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(200):
        z = torch.randn(512, 5, generator=generator)
        x1, x2 = feature_views(
            z, cfg.phi, 20, cfg.noise, cfg.feature_drop, cfg.sign_flip, generator
        )
        losses.append(float(spectral_contrastive(x1 @ w.T.float(), x2 @ w.T.float())))
    mean, error = statistics.fmean(losses), statistics.stdev(losses) / math.sqrt(len(losses))
    assert error < 0.02 * abs(expected)  # the check has power: a 2% bias would be visible
    assert abs(mean - expected) < 4 * error, (mean, expected, error)


def test_population_gradient_matches_autograd():
    cfg = SyntheticConfig(noise=0.2, feature_drop=(0.1, 0.5, 0.0, 0.3, 0.9), sign_flip=(1,))
    m, sigma = population_moments(cfg)
    w = torch.randn(7, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w.requires_grad_(True)
    (expected,) = torch.autograd.grad(population_loss(w, m, sigma), w)
    loss, grad = population_gradient(w.detach(), m, sigma)
    assert torch.allclose(loss, population_loss(w, m, sigma).detach())
    assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-10)


def test_theory_optimum_is_attained_by_the_diagonal_map():
    cfg = SyntheticConfig(phi=PHI, noise=0.3, feature_drop=(0.0, 0.3, 0.6, 0.0, 0.2))
    post, optimum = theory_post_weight(cfg)
    m, sigma = population_moments(cfg)
    w = torch.zeros(20, 20, dtype=torch.float64)
    w[range(5), range(5)] = torch.tensor(post, dtype=torch.float64)
    assert math.isclose(float(population_loss(w, m, sigma)), optimum, rel_tol=1e-12)
    # ... and any perturbation of it is worse.
    bump = 1e-3 * torch.randn(
        20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert float(population_loss(w + bump, m, sigma)) > optimum


# --------------------------------------------------------------------------- trends


LINEAR = {
    "phi": PHI,
    "noise": 0.1,
    "width": 20,
    "out_dim": 20,
    "init_std": 0.05,
    "lr": 0.02,
    "steps": 10_000,
}


@pytest.fixture(scope="module")
def t1_runs():
    return [run({**LINEAR, "seed": seed}) for seed in (0, 1, 2)]


def test_t1_pre_weight_is_square_root_of_post_weight(t1_runs):
    """T1: linear model, population loss, no weight decay, small init: gradient flow keeps
    W1 W1^T - W2^T W2 at its (small) initial value, so ||W1 e_k|| = sqrt(||W2 W1 e_k||)."""
    for r in t1_runs:
        # Converged to the closed-form optimum, so the weights below are the trained ones.
        assert math.isclose(r.final_loss, r.optimal_loss, rel_tol=1e-4)
        for got, want in zip(r.post_weight, r.theory_post_weight, strict=True):
            assert math.isclose(got, want, rel_tol=0.02)
        assert abs(r.slope - 0.5) < 0.05, r.slope
        assert r.balancedness < 0.1, r.balancedness
        for pre, post in zip(r.pre_weight, r.post_weight, strict=True):
            assert math.isclose(pre, math.sqrt(post), rel_tol=0.03)
    assert abs(statistics.fmean(r.slope for r in t1_runs) - 0.5) < 0.05


def test_t2_post_weights_are_more_spread_than_pre(t1_runs):
    for r in t1_runs:
        pre, post = spread(r.pre_weight), spread(r.post_weight)
        assert post > pre > 1
        # The square-root law says log spread post = 2 log spread pre.
        assert math.isclose(math.log(post), 2 * math.log(pre), rel_tol=0.1)


def test_t3_dropping_a_feature_lowers_its_post_weight_faster():
    j = 2
    before = run({**LINEAR, "feature_drop": (0.0,) * 5})
    after = run({**LINEAR, "feature_drop": tuple(0.9 if k == j else 0.0 for k in range(5))})
    post_ratio = after.post_weight_norm[j] / before.post_weight_norm[j]
    pre_ratio = after.pre_weight_norm[j] / before.pre_weight_norm[j]
    assert post_ratio < pre_ratio < 1, (post_ratio, pre_ratio)
    # In normalised units too (true here; in general only the ratios are guaranteed, since
    # sqrt(a) - sqrt(b) < a - b needs sqrt(a) + sqrt(b) > 1).
    drop_post = before.post_weight_norm[j] - after.post_weight_norm[j]
    drop_pre = before.pre_weight_norm[j] - after.pre_weight_norm[j]
    assert drop_post > drop_pre > 0
    # The square-root law: the relative drop of pre is half that of post in log units.
    assert math.isclose(math.log(pre_ratio), 0.5 * math.log(post_ratio), rel_tol=0.1)
    # The other features keep their normalised weights (the max-normaliser is feature 4).
    for k in (0, 1, 3):
        assert math.isclose(after.post_weight_norm[k], before.post_weight_norm[k], rel_tol=0.02)


def test_t4_weight_decay_removes_weak_feature_from_both_layers():
    # Feature 4 is weak twice over (phi = 0.2, dropped half the time) and noise is strong, so
    # without weight decay its normalised pre weight sits well above its post weight.
    weak = 4
    base = {**LINEAR, "noise": 0.5, "feature_drop": (0.0, 0.0, 0.0, 0.0, 0.5), "steps": 15_000}
    decays = (0.0, 1e-3, 1e-2, 3e-2)
    runs = [run({**base, "weight_decay": wd}) for wd in decays]
    gaps = [r.pre_weight_norm[weak] - r.post_weight_norm[weak] for r in runs]
    assert gaps[0] > 0.1  # a real gap to begin with
    assert runs[0].pre_weight[weak] > 0.5
    for r in runs[2:]:  # above the threshold: gone from both layers, strong features stay
        assert r.pre_weight[weak] < 1e-3 and r.post_weight[weak] < 1e-3, r.pre_weight
        assert r.pre_weight[0] > 0.5 and r.post_weight[0] > 0.5
    for smaller, larger in itertools.pairwise(gaps):
        assert larger <= smaller + 0.01, gaps  # the gap never grows with weight decay
    assert gaps[-1] < 0.01


T5 = {
    "model": "relu",
    "mode": "sampled",
    "phi": PHI,
    "noise": 0.1,
    "sign_flip": (0,),
    "width": 64,
    "out_dim": 20,
    "batch_size": 256,
    "lr": 0.05,
    "steps": 2000,
}


def test_t5_relu_sign_flip_hides_the_feature_from_post_but_not_pre():
    """T5 ([X] §4): the loss asks f to be invariant to sign(z_0); the head W2 cancels it, while
    the ReLU layer still carries it (it encodes |z_0| as ReLU(w z_0) + ReLU(-w z_0))."""
    seeds = (0, 1, 2)
    runs = [run({**T5, "seed": seed}) for seed in seeds]
    pre = statistics.fmean(r.probe_pre[0] for r in runs)
    post = statistics.fmean(r.probe_post[0] for r in runs)
    assert pre > 0.75, pre  # chance is 0.5
    assert post < 0.56, post  # 2000 test points: chance +- 0.011 (1 sd)
    for r in runs:
        # Learned, not left over from the init: ||W1 e_0|| grew ~4x from ~0.05 * sqrt(64).
        assert r.pre_weight[0] > 1.0
        assert statistics.fmean(r.probe_post[1:4]) > 0.75  # unflipped features stay readable
    # Control: without the flip the post features read sign(z_0) fine.
    control = run({**T5, "sign_flip": ()})
    assert control.probe_post[0] > 0.85


# --------------------------------------------------------------------------- plumbing


def test_run_is_deterministic_and_reports_progress():
    calls = []
    cfg = {**LINEAR, "steps": 60, "report_every": 20}
    first = run(cfg, on_epoch=lambda epoch, metrics, state: calls.append((epoch, metrics, state)))
    second = run(SyntheticConfig.from_dict(cfg))
    assert first.metrics() == second.metrics()
    assert [c[0] for c in calls] == [1, 2, 3]
    assert calls[-1][1]["train/step"] == 60.0 and "train/loss" in calls[-1][1]
    assert calls[-1][2]["W1"].shape == (20, 20)
    metrics = first.metrics()
    for name in (
        "train/loss",
        "synthetic/slope",
        "synthetic/pre_weight/4",
        "synthetic/post_weight_norm/0",
        "probe/feature3/pre",
        "probe/feature3/gap",
    ):
        assert math.isfinite(metrics[name]), name
    json.dumps(first.to_dict())  # plain data, ready for a results file
    assert run({**cfg, "seed": 1}).metrics() != first.metrics()


def test_sampled_linear_training_approaches_the_population_optimum():
    # Three stronger features: the weakest feature of PHI needs ~3x more SGD steps to leave the
    # saddle, and this test is about the sampled pipeline, not about saddle escape.
    r = run({**LINEAR, "phi": (1.0, 0.7, 0.5), "dim": 10, "mode": "sampled", "steps": 2000})
    assert r.final_loss < 0.99 * r.optimal_loss  # both negative: within 1% of the minimum
    for got, want in zip(r.post_weight, r.theory_post_weight, strict=True):
        assert math.isclose(got, want, rel_tol=0.05)  # minibatch noise, lr 0.02, batch 256
