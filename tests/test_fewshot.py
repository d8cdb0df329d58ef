"""Few-shot curves: class-balanced seeded subsets, the batched curve fit, the record field, the
fewshot table and figure; and one tiny real trial producing every issue-13 output (kNN,
diagnostics per epoch and at the end, few-shot rows) through to the analysis tables."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import tiny

from analysis.fewshot import fewshot_frame
from analysis.figures import fewshot_figures, rank_figures
from analysis.tables import build_tables
from analysis.trials import FINISHED, Trial
from headsweep import metrics as M
from headsweep import pretrain
from headsweep.config import TrialConfig
from headsweep.fewshot import balanced_subsets, few_shot_curve, row_space
from headsweep.probes import few_shot_index, fit_sas
from headsweep.record import FewShotRow, TrialRecord
from trainables.contrastive import record_of

LABELS = torch.arange(60) % 4  # 15 examples of each of 4 classes


def test_subsets_are_class_balanced_seeded_and_nested():
    subsets = balanced_subsets(LABELS, 3, 5, seed=0)
    assert len(subsets) == 5
    for index in subsets:
        assert torch.bincount(LABELS[index], minlength=4).tolist() == [3, 3, 3, 3]
        assert torch.equal(index, index.sort().values) and len(set(index.tolist())) == 12
    assert len({tuple(i.tolist()) for i in subsets}) == 5  # the subsets differ
    again = balanced_subsets(LABELS, 3, 5, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(subsets, again, strict=True))
    other = balanced_subsets(LABELS, 3, 5, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(subsets, other, strict=True))
    larger = balanced_subsets(LABELS, 7, 5, seed=0)
    for small, big in zip(subsets, larger, strict=True):
        assert set(small.tolist()) <= set(big.tolist())  # nested in n
    # subset 0 is the training set the main probe uses for probe.few_shot = n
    main = few_shot_index(LABELS, 3, torch.Generator().manual_seed(0))
    assert torch.equal(main, subsets[0])


def test_more_shots_than_a_class_has_fails_naming_the_key():
    labels = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="probe.few_shot_curve: 3 shots per class.*class 1"):
        balanced_subsets(labels, 3, 2, seed=0)


def test_a_curve_point_larger_than_a_class_is_skipped(caplog):
    train, test, labels, test_labels, classes = curve_inputs()
    probe = {"protocol": "ridge", "few_shot_curve": [2, 16], "few_shot_subsets": 2}
    cfg = TrialConfig.from_dict({"probe": probe}).probe
    rows = few_shot_curve(train, test, labels, test_labels, classes, cfg, seed=0)
    # target a has 15 examples per class: no 16-shot point; target b (30 per class) has one
    assert {(r.target, r.shots) for r in rows} == {("a", 2), ("b", 2), ("b", 16)}
    assert "16 shots per class skipped for target 'a'" in caplog.text


def curve_inputs():
    g = torch.Generator().manual_seed(3)
    train = {"pre": torch.randn(60, 6, generator=g), "post": torch.randn(60, 3, generator=g)}
    test = {tap: torch.randn(20, f.shape[1], generator=g) for tap, f in train.items()}
    labels = {"a": LABELS, "b": torch.arange(60) % 2}
    test_labels = {"a": torch.arange(20) % 4, "b": torch.arange(20) % 2}
    return train, test, labels, test_labels, {"a": 4, "b": 2}


@pytest.mark.parametrize("protocol", ["sas", "ridge"])
def test_curve_rows_match_one_probe_per_subset(protocol):
    train, test, labels, test_labels, classes = curve_inputs()
    probe = {"protocol": protocol, "steps": 100, "few_shot_curve": [2, 0], "few_shot_subsets": 3}
    cfg = TrialConfig.from_dict({"probe": probe}).probe
    rows = few_shot_curve(train, test, labels, test_labels, classes, cfg, seed=5)
    # 2 targets x 2 taps x (3 subsets of 2 shots + the single "all" fit)
    assert len(rows) == 2 * 2 * (3 + 1)
    assert {(r.shots, r.subset) for r in rows} == {(2, 0), (2, 1), (2, 2), (0, 0)}
    for row in rows:
        if row.shots == 0:
            index = torch.arange(60)
        else:
            index = balanced_subsets(labels[row.target], 2, 3, seed=5)[row.subset]
        x, y = train[row.tap][index], labels[row.target][index]
        if protocol == "sas":
            fit = fit_sas(x, y, classes[row.target], cfg.penalty, cfg.steps)
            expected = fit.accuracy(test[row.tap], test_labels[row.target])
            assert row.accuracy == pytest.approx(expected, abs=0.051)  # one test example
        else:
            from headsweep.probes import ridge_accuracy

            expected = ridge_accuracy(
                x, y, test[row.tap], test_labels[row.target], classes[row.target], cfg.penalty
            )
            assert row.accuracy == pytest.approx(expected, abs=1e-12)


def test_row_space_reduction_keeps_the_probe_and_its_test_logits():
    g = torch.Generator().manual_seed(4)
    x, x_test = torch.randn(12, 40, generator=g), torch.randn(30, 40, generator=g)
    y = torch.arange(12) % 3
    z, z_test = row_space(x, x_test)
    assert z.shape == (12, 11) and z_test.shape == (30, 11)  # rank of 12 centred rows
    full = fit_sas(x.double(), y, 3, 1e-3, 500, rtol=1e-14)
    reduced = fit_sas(z.double(), y, 3, 1e-3, 500, rtol=1e-14)
    assert reduced.objective == pytest.approx(full.objective, rel=2e-5)  # float32 solver
    logits = x_test @ full.weight + full.bias
    same = z_test @ reduced.weight + reduced.bias
    assert (same - logits).abs().max() <= 1e-3 * logits.abs().max()
    wide = torch.randn(50, 8, generator=g)
    assert row_space(wide, wide)[0] is wide  # more rows than dimensions: unchanged


def test_the_all_shots_point_reuses_the_main_probe():
    train, test, labels, test_labels, classes = curve_inputs()
    cfg = TrialConfig.from_dict({"probe": {"few_shot_curve": [0], "few_shot_subsets": 2}}).probe
    known = {(tap, target): 0.123 for tap in train for target in classes}
    rows = few_shot_curve(train, test, labels, test_labels, classes, cfg, 0, all_shots=known)
    assert len(rows) == 4 and all(r.accuracy == 0.123 and r.subset == 0 for r in rows)


def test_records_round_trip_few_shot_rows_and_read_old_records_without_them():
    record = TrialRecord("contrastive", {}, {}, few_shot=[FewShotRow("pre", "digit", 5, 1, 0.5)])
    assert TrialRecord.from_json(record.to_json()) == record
    old = json.loads(record.to_json())
    del old["few_shot"]
    assert TrialRecord.from_dict(old).few_shot == []


def test_fewshot_frame_statistics():
    points = pd.DataFrame(
        {
            "seed": [0, 0, 1, 1],
            "head": ["mlp"] * 4,
            "target": ["d"] * 4,
            "tap": ["pre"] * 4,
            "shots": [5] * 4,
            "accuracy": [0.5, 0.6, 0.7, 0.8],
        }
    )
    row = fewshot_frame(points, ["head"]).iloc[0]
    values = np.array([0.5, 0.6, 0.7, 0.8])
    half = 3.182446305284263 * values.std(ddof=1) / 2  # t(0.975, 3)
    assert row["n"] == 4 and row["seeds"] == 2
    assert row["mean"] == pytest.approx(0.65) and row["std"] == pytest.approx(values.std(ddof=1))
    assert row["ci_low"] == pytest.approx(0.65 - half) and row["ci_high"] == pytest.approx(
        0.65 + half
    )


@pytest.fixture(scope="module")
def trial_result():
    probe = {"few_shot_curve": [1, 5, 0], "few_shot_subsets": 3, "knn_k": 20}
    return pretrain(tiny(probe=probe))


def test_a_tiny_trial_reports_knn_diagnostics_and_few_shot_rows(trial_result):
    result = trial_result
    taps = ("pre", "layer1", "post")
    for tap in taps:
        for name in (M.rank(tap), M.align(tap), M.uniform(tap)):
            assert math.isfinite(result.metrics[name]), name
        assert 1.0 <= result.metrics[M.rank(tap)] <= 128
        for epoch in result.history:
            for name in (M.rank(tap, True), M.align(tap, True), M.uniform(tap, True)):
                assert math.isfinite(epoch[name]), name
        for target in ("object", "coarse", "digit"):
            assert 0.0 <= result.metrics[M.knn(target, tap)] <= 1.0
    for target in ("object", "coarse", "digit"):
        gap = result.metrics[M.knn(target, "pre")] - result.metrics[M.knn(target, "post")]
        assert result.metrics[M.knn(target, "gap")] == pytest.approx(gap)
    # 3 targets x 2 taps (pre, post) x (2 n x 3 subsets + 1 "all")
    assert len(result.few_shot) == 3 * 2 * 7
    assert {row["tap"] for row in result.few_shot} == {"pre", "post"}
    probes = {(r["tap"], r["target"]): r["accuracy"] for r in result.probes}
    for row in result.few_shot:
        if row["shots"] == 0:
            assert row["accuracy"] == probes[row["tap"], row["target"]]
    assert {"diagnostics_s", "knn_s", "few_shot_s"} <= set(result.timings)
    assert {row["tap"] for row in result.probes} == set(taps)  # probe rows unchanged


def test_the_tiny_trial_fills_the_tables_and_figures(trial_result, tmp_path):
    trials = []
    for seed in (0, 1):
        record = record_of(trial_result)
        config = {**record.flat_config(), "train.seed": seed}
        trials.append(Trial(f"t{seed}", FINISHED, config, seed=seed, record=record))
    tables = build_tables("tiny", trials, {}, "train.seed")
    fewshot = tables["fewshot"].to_pandas()
    assert len(fewshot) == 3 * 2 * 3  # target x tap x shots
    assert (fewshot["n"] == fewshot["shots"].map({1: 6, 5: 6, 0: 2})).all()
    assert (fewshot["seeds"] == 2).all()
    assert tables["fewshot"].schema.field("shots").type == "int64"
    history = tables["history"].to_pandas()
    assert {M.rank("post", True), M.align("pre", True), M.uniform("layer1", True)} <= set(
        history.columns
    )
    trials_frame = tables["trials"].to_pandas()
    assert {M.knn("digit", "gap"), M.rank("pre"), M.uniform("post")} <= set(trials_frame.columns)
    paths = fewshot_figures(fewshot, [], tmp_path, "tiny")
    assert sorted(p.name for p in paths) == [
        f"{t}_fewshot.png" for t in ("coarse", "digit", "object")
    ]
    # the rank figure needs a numeric axis: fake a second setting
    trials_frame["aug.p_drop"] = [0.0, 1.0]
    assert [p.name for p in rank_figures(trials_frame, ["aug.p_drop"], tmp_path, "tiny")] == [
        "rank_vs_aug_p_drop.png"
    ]


def test_few_shot_curve_is_off_by_default_and_old_tables_stay_empty():
    trial = Trial("t0", FINISHED, {"train.seed": 0}, record=TrialRecord("contrastive", {}, {}))
    tables = build_tables("empty", [trial], {}, "train.seed")
    assert tables["fewshot"].num_rows == 0
    assert "mean" in tables["fewshot"].schema.names
    assert TrialConfig.from_dict({}).probe.few_shot_curve == ()
