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


def reference_sas(x: torch.Tensor, y: torch.Tensor, classes: int, reg: float):
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
        options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 50},
    )
    W, b = res.x[: d * classes].reshape(d, classes), res.x[d * classes :]
    assert np.abs(res.jac).max() < 1e-7  # the reference really is at the minimum
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
