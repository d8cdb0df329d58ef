import numpy as np
import pytest
import scipy.optimize
import torch
from sklearn.linear_model import LogisticRegression

from headsweep.config import ProbeConfig
from headsweep.probes import (
    PROTOCOLS,
    few_shot_index,
    fit_probes,
    fit_sas,
    fit_sas_batch,
    protocol_name,
    ridge_accuracy,
    sas_accuracy,
    sas_objective,
)


def blobs(n: int, d: int, classes: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 2
    y = torch.randint(classes, (n,), generator=g)
    return (centres[y] + torch.randn(n, d, generator=g)) * scale, y


def test_sas_probe_agrees_with_sklearn_at_the_same_penalty():
    x, y = blobs(300, 5, 3, 0)
    xt, yt = blobs(200, 5, 3, 0)  # same centres (same seed), fresh noise
    xt = xt + torch.randn_like(xt)
    penalty = 1e-2
    ours = sas_accuracy(x, y, xt, yt, 3, penalty, steps=500)
    # sklearn: C * sum CE + 1/2 ||W||^2 == 2 n C * (mean CE + 1/(2 n C) ||W||^2), and the sas
    # objective is mean CE + penalty ||W||^2 (no 1/2): C = 1 / (2 n penalty).
    ref = LogisticRegression(C=1 / (2 * penalty * len(y)), max_iter=5000, tol=1e-10)
    ref.fit(x.numpy(), y.numpy())
    assert ours == pytest.approx(float((ref.predict(xt.numpy()) == yt.numpy()).mean()), abs=0.01)


def reference_sas(
    x: torch.Tensor, y: torch.Tensor, classes: int, reg: float, gtol=1e-7, ftol=1e-15
):
    """An independent minimiser of mean CE + reg ||W||^2 (bias unpenalised): scipy's L-BFGS-B
    in float64 with an analytic gradient, run to a tight tolerance."""
    X, Y = x.double().numpy(), y.numpy()
    n, d = X.shape
    onehot = np.eye(classes)[Y]

    def f(theta):
        W, b = theta[: d * classes].reshape(d, classes), theta[d * classes :]
        z = X @ W + b
        z = z - z.max(1, keepdims=True)
        lse = np.log(np.exp(z).sum(1))
        p = np.exp(z - lse[:, None])
        value = (lse - (z * onehot).sum(1)).mean() + reg * (W**2).sum()
        dz = (p - onehot) / n
        return value, np.concatenate([(X.T @ dz + 2 * reg * W).ravel(), dz.sum(0)])

    res = scipy.optimize.minimize(
        f,
        np.zeros(d * classes + classes),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 20000, "ftol": ftol, "gtol": gtol / 10, "maxcor": 50},
    )
    W, b = res.x[: d * classes].reshape(d, classes), res.x[d * classes :]
    assert np.abs(res.jac).max() < gtol  # the reference really is at the minimum
    return torch.from_numpy(W), torch.from_numpy(b), float(res.fun)


@pytest.mark.parametrize(("d", "sep"), [(64, 0.3), (512, 0.15)])
def test_sas_probe_equals_a_direct_minimisation_of_ce_plus_reg_w2(d, sep):
    """Same objective value (the sas probe sits at the minimum of CE + reg ||W||^2, no 1/2)
    and the same test accuracy as a float64 reference, 10 classes, 300 training rows."""
    classes, reg = 10, 1e-3
    g = torch.Generator().manual_seed(d)
    centres = torch.randn(classes, d, generator=g) * sep  # overlapping classes: acc < 1
    y, yt = (
        torch.randint(classes, (300,), generator=g),
        torch.randint(classes, (2000,), generator=g),
    )
    x = centres[y] + torch.randn(300, d, generator=g)
    xt = centres[yt] + torch.randn(2000, d, generator=g)

    fit = fit_sas(x, y, classes, reg, max_iter=500)
    W, b, best = reference_sas(x, y, classes, reg)
    ours = float(sas_objective(x.double(), y, fit.weight.double(), fit.bias.double(), reg))
    assert fit.converged and fit.weight.dtype == torch.float32
    assert abs(ours - best) < 1e-4
    assert abs(ours - best) < 1e-6  # in fact as close as float32 allows
    ref_pred = (xt.double() @ W + b).argmax(1)
    ref_acc = (ref_pred == yt).double().mean().item()
    assert 0.3 < ref_acc < 0.97  # a probe with something to get wrong
    assert fit.accuracy(xt, yt) == pytest.approx(ref_acc, abs=0.001 + 1e-9)  # 0.1 point
    pred = (xt @ fit.weight + fit.bias).argmax(1)
    assert (pred == ref_pred).double().mean().item() >= 0.995
    # The 1/2 matters: the minimiser at half the penalty is a different probe.
    _, _, half = reference_sas(x, y, classes, reg / 2)
    assert abs(best - half) > 1e-3


def test_sas_probe_stops_at_the_iteration_cap():
    x, y = blobs(200, 32, 5, 4)
    capped = fit_sas(x, y, 5, 1e-3, max_iter=3)
    assert capped.iterations == 3 and not capped.converged
    full = fit_sas(x, y, 5, 1e-3, max_iter=500)
    assert full.converged and full.iterations < 500 and full.objective < capped.objective


def test_ridge_dual_and_primal_agree():
    x, y = blobs(40, 30, 4, 1)
    xt, yt = blobs(50, 30, 4, 1)
    wide = torch.cat([x, torch.zeros(40, 30)], 1)  # d = 60 > n = 40: dual path
    wide_t = torch.cat([xt, torch.zeros(50, 30)], 1)
    assert ridge_accuracy(x, y, xt, yt, 4, 0.1) == ridge_accuracy(wide, y, wide_t, yt, 4, 0.1)


def test_probes_are_scale_sensitive_with_a_fixed_penalty():
    """Shrinking the informative feature axis hurts a penalised probe: the pre/post effect."""
    x, y = blobs(400, 4, 2, 2)
    xt, yt = blobs(400, 4, 2, 2)
    noise = torch.randn(400, 16) * 3
    full = ridge_accuracy(torch.cat([x, noise], 1), y, torch.cat([xt, noise], 1), yt, 2, 1.0)
    shrunk = ridge_accuracy(
        torch.cat([x * 1e-3, noise], 1), y, torch.cat([xt * 1e-3, noise], 1), yt, 2, 1.0
    )
    assert full > 0.9 and shrunk < 0.75


def test_few_shot_index_takes_n_per_class():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3)
    idx = few_shot_index(labels, 5, torch.Generator().manual_seed(0))
    counts = np.bincount(labels[idx].numpy())
    assert counts.tolist() == [5, 5, 3]
    assert len(set(idx.tolist())) == len(idx)


def test_protocol_names_are_exact():
    assert set(PROTOCOLS) == {"sas", "ridge"}
    assert (
        protocol_name(ProbeConfig())
        == "sas(reg=0.001,lbfgs,max_iter=500,rtol=1e-09,standardize=False,few_shot=0)"
    )
    assert (
        protocol_name(ProbeConfig(protocol="ridge", penalty=0.1, standardize=True, few_shot=5))
        == "ridge(reg=0.1,closed_form,standardize=True,few_shot=5)"
    )
    with pytest.raises(ValueError, match="probe.protocol"):
        protocol_name(ProbeConfig(protocol="logistic"))


@pytest.mark.parametrize("protocol", ["sas", "ridge"])
def test_every_result_carries_its_protocol(protocol):
    x, y = blobs(120, 6, 3, 5)
    feats = {"pre": x, "post": x[:, :3]}
    cfg = ProbeConfig(protocol=protocol, steps=50)
    rows = fit_probes(feats, feats, {"a": y}, {"a": y}, {"a": 3}, cfg)
    assert len(rows) == 2
    assert all(r.protocol == protocol_name(cfg) for r in rows)
    assert all(r.protocol.startswith(f"{protocol}(") for r in rows)
    assert all(r.accuracy > 0.6 for r in rows)  # chance: 1/3


def test_fit_probes_covers_every_tap_and_target_and_records_protocol():
    x, y = blobs(100, 6, 3, 3)
    feats = {"pre": x, "post": x[:, :2]}
    labels = {"a": y, "b": (y > 0).long()}
    cfg = ProbeConfig(protocol="ridge", penalty=1e-3, few_shot=10)
    rows = fit_probes(feats, feats, labels, labels, {"a": 3, "b": 2}, cfg)
    assert {(r.tap, r.target) for r in rows} == {(t, g) for t in feats for g in labels}
    assert all(r.protocol == protocol_name(cfg) and "few_shot=10" in r.protocol for r in rows)
    assert {r.dim for r in rows if r.tap == "post"} == {2}
    assert all(r.n_train <= 30 for r in rows)
    with pytest.raises(ValueError, match="probe.targets"):
        fit_probes(feats, feats, labels, labels, {"a": 3}, ProbeConfig(targets=("zzz",)))


# --------------------------------------------------------------------------- fixed features
# Acceptance 5 of issue 12: refitting with the batched probe gives the accuracies of the probe
# it replaced. The expectation comes from an independent float64 minimiser (scipy, above), on a
# deterministic stand-in for a trial's features: taps of 128, 512 and 128 dimensions from one
# latent code (a random ReLU layer, a wider one, a linear map of the first, so the taps are
# correlated and badly scaled like a network's), targets of 10, 5 and 10 classes, one nearly
# separable and one weak (accuracies ~1.0 and ~0.3, as on quickstart's object and digit).


def fixed_features(n_train: int, n_test: int, seed: int = 12, wide: int = 512, narrow: int = 128):
    """(train taps, test taps, train labels, test labels): one draw, split."""
    n = n_train + n_test
    g = torch.Generator().manual_seed(seed)
    obj, digit = torch.randint(10, (n,), generator=g), torch.randint(10, (n,), generator=g)
    code = (
        torch.randn(10, 24, generator=g)[obj] * 1.5
        + torch.randn(10, 24, generator=g)[digit] * 0.25
        + torch.randn(n, 24, generator=g)
    )
    pre = torch.relu(code @ torch.randn(24, narrow, generator=g) * 0.3)
    layer1 = torch.relu(code @ torch.randn(24, wide, generator=g)) * 0.6
    taps = {
        "pre": pre + 0.3 * torch.randn(n, narrow, generator=g),
        "layer1": layer1 + 0.3 * torch.randn(n, wide, generator=g),
        "post": pre @ torch.randn(narrow, narrow, generator=g) * 0.1,
    }
    labels = {"object": obj, "coarse": obj // 2, "digit": digit}

    def split(d, part):
        return {k: v[:n_train] if part == 0 else v[n_train:] for k, v in d.items()}

    return split(taps, 0), split(taps, 1), split(labels, 0), split(labels, 1)


@pytest.mark.parametrize(
    "size",
    [
        (600, 500, 128, 32),
        # Realistic sizes (scipy's reference takes minutes on them under load): -m slow.
        pytest.param((3000, 1000, 512, 128), marks=pytest.mark.slow),
    ],
)
def test_refitted_fixed_features_match_the_float64_reference(size):
    n_train, n_test, wide, narrow = size
    train, test, ytr, yte = fixed_features(n_train, n_test, wide=wide, narrow=narrow)
    classes = {"object": 10, "coarse": 5, "digit": 10}
    cfg = ProbeConfig(protocol="sas", penalty=1e-3, steps=500)
    rows = fit_probes(train, test, ytr, yte, classes, cfg)
    assert [(r.tap, r.target) for r in rows] == [(t, g) for g in classes for t in train]
    assert all(r.protocol == protocol_name(cfg) for r in rows)
    keys = [(r.tap, r.target) for r in rows]
    fits = fit_sas_batch([(train[t], ytr[g], classes[g]) for t, g in keys], 1e-3, 500)
    accs = {}
    for row, fit in zip(rows, fits, strict=True):
        x, y, k = train[row.tap], ytr[row.target], classes[row.target]
        W, b, best = reference_sas(x, y, k, 1e-3, gtol=1e-5, ftol=1e-13)
        ref = ((test[row.tap].double() @ W + b).argmax(1) == yte[row.target]).double().mean()
        assert row.accuracy == pytest.approx(float(ref), abs=0.005), (row.tap, row.target)
        accs[row.tap, row.target] = row.accuracy
        # The same optimum, not only the same accuracy.
        ours = float(sas_objective(x.double(), y, fit.weight.double(), fit.bias.double(), 1e-3))
        assert fit.converged and abs(ours - best) <= 1e-5 * max(1.0, best), (row.tap, row.target)
    # A stand-in with something to get right and something to get wrong, as on quickstart.
    assert accs["pre", "object"] > 0.9 and accs["layer1", "digit"] < 0.7


def test_batching_changes_no_probe():
    """A probe fitted in a batch (padded to other probes' dimension and class count, sharing
    their matmuls) is the probe fitted alone; few_shot and standardize go through the batch."""
    train, test, ytr, yte = fixed_features(400, 200, seed=3)
    problems = [(train[t], ytr[g], k) for t in train for g, k in (("coarse", 5), ("digit", 10))]
    batch = fit_sas_batch(problems, 1e-3, 300)
    for (x, y, k), fit in zip(problems, batch, strict=True):
        alone = fit_sas(x, y, k, 1e-3, max_iter=300)
        assert fit.weight.shape == (x.shape[1], k) and fit.bias.shape == (k,)
        assert fit.objective == pytest.approx(alone.objective, rel=1e-5, abs=1e-6)
        assert (fit.weight - alone.weight).abs().max() < 1e-2 * alone.weight.abs().max()
    cfg = ProbeConfig(protocol="sas", few_shot=10, standardize=True, steps=300)
    rows = fit_probes(train, test, ytr, yte, {"object": 10, "digit": 10}, cfg, seed=5)
    for row in rows:
        index = few_shot_index(ytr[row.target], 10, torch.Generator().manual_seed(5))
        x, xt = train[row.tap][index], test[row.tap]
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        acc = sas_accuracy(
            (x - mean) / std, ytr[row.target][index], (xt - mean) / std, yte[row.target], 10,
            1e-3, 300,
        )  # fmt: skip
        assert row.n_train == len(index) == 100
        assert row.accuracy == pytest.approx(acc, abs=0.005)


def test_taps_too_wide_to_whiten_reach_the_same_optimum(monkeypatch):
    """Above WHITEN_MAX_DIM a tap is centred only (no cubic eigendecomposition, which took
    minutes on an 8,192-latent SAE tap): the same objective and weights as whitened."""
    from headsweep import batched_lbfgs

    train, _, ytr, _ = fixed_features(400, 200, seed=4)
    problems = [(train[t], ytr["digit"], 10) for t in train]
    whitened = fit_sas_batch(problems, 1e-3, 500)
    monkeypatch.setattr(batched_lbfgs, "WHITEN_MAX_DIM", 1)
    centred = fit_sas_batch(problems, 1e-3, 500)
    for (x, y, _), a, b in zip(problems, whitened, centred, strict=True):
        # float32 stalls a few 1e-5 short of the optimum without whitening: within the
        # protocol's accuracy tolerance (±0.5 point), not bit-equal.
        assert b.converged and b.objective == pytest.approx(a.objective, rel=1e-4)
        assert a.accuracy(x, y) == pytest.approx(b.accuracy(x, y), abs=0.005)
