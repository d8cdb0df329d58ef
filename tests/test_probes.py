import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from headsweep.config import ProbeConfig
from headsweep.probes import (
    few_shot_index,
    fit_probes,
    logistic_accuracy,
    protocol_name,
    ridge_accuracy,
)


def blobs(n: int, d: int, classes: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 2
    y = torch.randint(classes, (n,), generator=g)
    return (centres[y] + torch.randn(n, d, generator=g)) * scale, y


def test_logistic_probe_agrees_with_sklearn_at_the_same_penalty():
    x, y = blobs(300, 5, 3, 0)
    xt, yt = blobs(200, 5, 3, 0)  # same centres (same seed), fresh noise
    xt = xt + torch.randn_like(xt)
    penalty = 1e-2
    ours = logistic_accuracy(x, y, xt, yt, 3, penalty, steps=500)
    # sklearn: C * sum CE + 1/2 ||W||^2 == n*C * (mean CE + 1/(2 n C) ||W||^2)
    ref = LogisticRegression(C=1 / (penalty * len(y)), max_iter=5000, tol=1e-10)
    ref.fit(x.numpy(), y.numpy())
    assert ours == pytest.approx(float((ref.predict(xt.numpy()) == yt.numpy()).mean()), abs=0.01)


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
