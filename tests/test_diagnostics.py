"""Representation diagnostics (effective rank, alignment, uniformity) and the weighted kNN probe
against direct reference computations written here independently (numpy, plain loops), plus
their config keys and metric names."""

import math

import numpy as np
import pytest
import torch

from headsweep import diagnostics, knn
from headsweep import metrics as M
from headsweep.config import TrialConfig
from sweeps.metric_check import metric_problem
from trainables.contrastive import check_metric


def features(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def unit(row: np.ndarray) -> np.ndarray:
    return row / np.sqrt((row**2).sum())


# --------------------------------------------------------------------------- diagnostics


@pytest.mark.parametrize("shape", [(40, 7), (6, 30), (25, 25)])
def test_effective_rank_is_rankme_on_numpy_singular_values(shape):
    x = features(*shape, seed=1) * torch.linspace(0.05, 3.0, shape[1])  # uneven spectrum
    sigma = np.linalg.svd(x.double().numpy(), compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    expected = math.exp(-sum(pk * math.log(pk) for pk in p))
    assert diagnostics.effective_rank(x) == pytest.approx(expected, abs=1e-5)


def test_effective_rank_bounds():
    rank_one = torch.outer(torch.arange(1.0, 21.0), torch.ones(5))
    assert diagnostics.effective_rank(rank_one) == pytest.approx(1.0, abs=1e-4)
    orthogonal = torch.eye(8)
    assert diagnostics.effective_rank(orthogonal) == pytest.approx(8.0, abs=1e-4)
    assert diagnostics.effective_rank(torch.zeros(4, 3)) == 1.0


def test_alignment_is_the_mean_squared_distance_of_normalised_pairs():
    a, b = features(30, 6, seed=2), features(30, 6, seed=3)
    xa, xb = a.double().numpy(), b.double().numpy()
    expected = 0.0
    for i in range(len(xa)):
        diff = unit(xa[i]) - unit(xb[i])
        expected += math.sqrt((diff**2).sum()) ** 2
    expected /= len(xa)
    assert diagnostics.alignment(a, b) == pytest.approx(expected, abs=1e-5)
    assert diagnostics.alignment(a, 3 * a) == pytest.approx(0.0, abs=1e-12)  # scale-free


@pytest.mark.parametrize("chunk", [1024, 7])  # one block, and blocks that split the rows
def test_uniformity_is_log_mean_gaussian_potential_over_distinct_pairs(chunk, monkeypatch):
    monkeypatch.setattr(diagnostics, "PAIR_CHUNK", chunk)
    x = features(23, 5, seed=4)
    rows = [unit(r) for r in x.double().numpy()]
    total, pairs = 0.0, 0
    for i in range(len(rows)):
        for j in range(len(rows)):
            if i != j:
                total += math.exp(-2.0 * ((rows[i] - rows[j]) ** 2).sum())
                pairs += 1
    assert diagnostics.uniformity(x) == pytest.approx(math.log(total / pairs), abs=1e-5)


def test_uniformity_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        diagnostics.uniformity(torch.ones(1, 3))


def test_diagnose_names_every_tap_final_and_online():
    clean = {"pre": features(20, 8, 5), "post": features(20, 4, 6)}
    views = {tap: f + 0.1 for tap, f in clean.items()}
    final = diagnostics.diagnose(clean, views, clean)
    assert set(final) == {M.rank(t) for t in clean} | {M.align(t) for t in clean} | {
        M.uniform(t) for t in clean
    }
    online = diagnostics.diagnose(clean, views, clean, online=True)
    assert set(online) == {"online_" + name for name in final}
    assert all(M.per_epoch(name) and M.is_value(name) for name in online)
    assert not any(M.per_epoch(name) for name in final)


def test_view_taps_pairs_the_two_views_of_each_batch():
    def encode(x):
        return {"pre": x * 2, "post": x[:, :1]}

    def views(start, stop):
        ids = torch.arange(start, stop, dtype=torch.float32)[:, None].repeat(1, 3)
        return ids, -ids

    view1, view2 = diagnostics.view_taps(encode, views, 10, 4)
    assert torch.equal(view1["pre"][:, 0], 2 * torch.arange(10.0))
    assert torch.equal(view2["post"][:, 0], -torch.arange(10.0))


# --------------------------------------------------------------------------- kNN


def knn_reference(x_train, y_train, x_test, classes, k, temperature):
    """Per test sample: cosine similarity to every training sample, the k most similar (ties
    at equal similarity: lower training index first), votes exp(sim / T) per class, the
    largest vote wins (ties: lowest class)."""
    train = [unit(r) for r in x_train]
    predictions = []
    for query in x_test:
        q = unit(query)
        sims = [float(np.dot(q, t)) for t in train]
        order = sorted(range(len(train)), key=lambda i: (-sims[i], i))[: min(k, len(train))]
        votes = [0.0] * classes
        for i in order:
            votes[int(y_train[i])] += math.exp(sims[i] / temperature)
        best = max(votes)
        predictions.append(min(c for c in range(classes) if votes[c] == best))
    return predictions


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.07), (5, 0.07), (12, 0.5), (200, 0.07)])
def test_knn_accuracy_equals_a_per_sample_loop(k, temperature, monkeypatch):
    monkeypatch.setattr(knn, "CHUNK_ELEMENTS", 60)  # several test chunks
    x_train, x_test = features(40, 6, 7), features(25, 6, 8)
    y_train = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(9))
    y_test = torch.randint(0, 4, (25,), generator=torch.Generator().manual_seed(10))
    expected = knn_reference(
        x_train.double().numpy(), y_train.numpy(), x_test.double().numpy(), 4, k, temperature
    )
    sims, index = knn.neighbours(x_train, x_test, k)
    predicted = knn.vote(sims, index, y_train, 4, temperature)
    assert predicted.tolist() == expected
    accuracy = knn.knn_accuracy(x_train, y_train, x_test, y_test, 4, k, temperature)
    truth = sum(p == t for p, t in zip(expected, y_test.tolist(), strict=True)) / 25
    assert accuracy == pytest.approx(truth, abs=1e-12)


def test_knn_ties_and_k_beyond_the_training_set():
    # the query is equally similar to one example of class 1 and one of class 0: equal votes,
    # the lower class wins; k = 200 > n_train = 3 uses all three
    x_train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    y_train = torch.tensor([1, 0, 2])
    x_test = torch.tensor([[1.0, 1.0], [2.0, 2.0], [-1.0, -0.9]])
    sims, index = knn.neighbours(x_train, x_test, 200)
    assert index.shape == (3, 3)
    predicted = knn.vote(sims, index, y_train, 3, 0.07).tolist()
    reference = knn_reference(x_train.numpy(), y_train.numpy(), x_test.numpy(), 3, 200, 0.07)
    assert predicted == reference == [0, 0, 2]
    # duplicated training rows with different labels: the tie is in the votes, not the order
    dup = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([2, 1, 0])
    accuracy = knn.knn_accuracy(
        dup, labels, torch.tensor([[1.0, 0.0]]), torch.tensor([1]), 3, 2, 0.1
    )
    assert accuracy == 1.0  # classes 1 and 2 tie on the two duplicates: class 1 wins


def test_knn_metrics_cover_every_tap_and_target_with_a_gap():
    train = {"pre": features(30, 5, 11), "layer1": features(30, 4, 12), "post": features(30, 3, 13)}
    test = {tap: f[:10] for tap, f in train.items()}
    labels = {"a": torch.arange(30) % 3, "b": torch.arange(30) % 2}
    test_labels = {name: y[:10] for name, y in labels.items()}
    cfg = TrialConfig.from_dict({"probe": {"knn_k": 3}}).probe
    out = knn.knn_metrics(train, test, labels, test_labels, {"a": 3, "b": 2}, cfg)
    for target in ("a", "b"):
        for tap in train:
            expected = knn.knn_accuracy(
                train[tap], labels[target], test[tap], test_labels[target], 3 - (target == "b"),
                3, 0.07,
            )  # fmt: skip
            assert out[M.knn(target, tap)] == expected
        gap = out[M.knn(target, "pre")] - out[M.knn(target, "post")]
        assert out[M.knn(target, "gap")] == pytest.approx(gap)


# --------------------------------------------------------------------------- config, names


@pytest.mark.parametrize(
    ("probe", "key"),
    [
        ({"knn_k": -1}, "probe.knn_k"),
        ({"knn_temperature": 0.0}, "probe.knn_temperature"),
        ({"few_shot_curve": [5, 5]}, "probe.few_shot_curve"),
        ({"few_shot_curve": [-1]}, "probe.few_shot_curve"),
        ({"few_shot_subsets": 0}, "probe.few_shot_subsets"),
    ],
)
def test_bad_probe_values_name_the_key(probe, key):
    with pytest.raises(ValueError, match=key):
        TrialConfig.from_dict({"probe": probe})


def test_new_metric_names_parse_and_are_checked_against_the_config():
    cfg = TrialConfig.from_dict({})
    for name in ("knn/digit/pre", "knn/digit/gap", "rank/layer1", "online_align/post"):
        assert M.parse(name) is not None and M.parse(name).name == name
        assert check_metric(name, cfg) == "" and metric_problem(name, cfg) == "", name
    assert M.is_gap("knn/digit/gap") and M.partner("knn/digit/pre") == "knn/digit/post"
    assert "unknown target" in check_metric("knn/nope/pre", cfg)
    assert "unknown tap" in metric_problem("rank/gap", cfg)
    off = TrialConfig.from_dict({"probe": {"knn_k": 0, "diagnostics": False}})
    assert "probe.knn_k" in metric_problem("knn/digit/pre", off)
    assert "probe.diagnostics" in metric_problem("rank/pre", off)
    no_online = TrialConfig.from_dict({"probe": {"online_n": 0}})
    assert "probe.online_n" in metric_problem("online_rank/pre", no_online)
    assert metric_problem("rank/pre", no_online) == ""
