"""Worst-group robustness offline (headsweep.groups, headsweep.data.spurious): the metric is a
plain per-group minimum, the DFR subset is group-balanced and seeded, the spurious split has the
agreement fraction rho in train and balanced groups in test, and one real trial carries group
rows through the record into groups.parquet and the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.groups import pre_post_lines
from analysis.report import Summary, _short
from analysis.tables import build_tables
from analysis.trials import FINISHED, Trial
from headsweep import TrialConfig, pretrain
from headsweep import metrics as M
from headsweep.config import DataConfig, ProbeConfig
from headsweep.data import groups_of, load_dataset
from headsweep.data.spurious import paired_class
from headsweep.groups import average_and_worst, balanced_index, fit_group_probes, group_ids
from headsweep.probes import fit_probes
from headsweep.record import TrialRecord
from sweeps.metric_check import metric_problem
from trainables.contrastive import check_metric, record_of


def spurious(rho: float, n_train: int = 2000, n_test: int = 1000, **extra) -> DataConfig:
    return DataConfig(name="textures_v2", n_train=n_train, n_test=n_test, spurious_rho=rho, **extra)


# --------------------------------------------------------------------------- the metric


def test_worst_group_equals_a_direct_per_group_computation():
    g = torch.Generator().manual_seed(0)
    groups = torch.randint(7, (500,), generator=g)
    groups[groups == 3] = 4  # a group id with no rows: it must not count
    correct = torch.rand(500, generator=g) < 0.3 + 0.1 * groups
    average, worst, n_groups = average_and_worst(correct, groups)
    per_group = {int(k): correct[groups == k].double().mean().item() for k in torch.unique(groups)}
    assert n_groups == len(per_group) == 6
    assert worst == pytest.approx(min(per_group.values()), abs=1e-12)
    assert average == pytest.approx(correct.double().mean().item(), abs=1e-12)


def test_group_ids_are_a_mixed_radix_code():
    labels = {"y": torch.tensor([0, 0, 1, 1]), "place": torch.tensor([0, 1, 0, 1])}
    assert group_ids(labels, ("y", "place"), {"y": 2, "place": 2}).tolist() == [0, 1, 2, 3]
    labels = {"digit": torch.tensor([3, 9]), "coarse": torch.tensor([4, 0])}
    assert group_ids(labels, ("digit", "coarse"), {"digit": 10, "coarse": 5}).tolist() == [19, 45]


def test_dfr_subset_is_group_balanced_and_seeded():
    groups = torch.tensor([0] * 50 + [1] * 7 + [2] * 20 + [5] * 9)
    first = balanced_index(groups, torch.Generator().manual_seed(3))
    again = balanced_index(groups, torch.Generator().manual_seed(3))
    other = balanced_index(groups, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    counts = torch.bincount(groups[first], minlength=6)
    assert counts.tolist() == [7, 7, 7, 0, 0, 7]  # every present group at the smallest's count
    assert first.unique().numel() == first.numel() and bool((first[1:] > first[:-1]).all())


def test_group_probes_on_a_spurious_feature():
    """A core feature (noisy) and a spurious one (clean in train, where it agrees with the label
    95% of the time; independent in test): ERM leans on the spurious feature and fails the
    conflicting groups; DFR refits on balanced groups and lifts the worst group."""
    g = torch.Generator().manual_seed(0)

    def split(n: int, agree: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = torch.randint(2, (n,), generator=g)
        place = torch.where(torch.rand(n, generator=g) < agree, y, 1 - y)
        core = (2 * y - 1).float() + 0.8 * torch.randn(n, generator=g)
        spur = 3.0 * (2 * place - 1).float() + 0.1 * torch.randn(n, generator=g)
        return torch.stack([core, spur], 1), {"y": y, "place": place}

    x_train, train_labels = split(2000, 0.95)
    x_test, test_labels = split(2000, 0.5)
    classes = {"y": 2, "place": 2}
    cfg = ProbeConfig(penalty=1e-3, steps=200, targets=("y",))
    rows = fit_group_probes(
        {"pre": x_train}, {"pre": x_test}, train_labels, test_labels, classes, ("y", "place"), cfg
    )
    by_method = {r.method: r for r in rows}
    assert set(by_method) == {"erm", "dfr"} and all(r.n_groups == 4 for r in rows)
    assert by_method["erm"].n_train == 2000
    smallest = int(torch.bincount(group_ids(train_labels, ("y", "place"), classes)).min())
    assert by_method["dfr"].n_train == 4 * smallest
    assert by_method["erm"].worst_group < 0.5 < by_method["dfr"].worst_group
    # ERM's average is the ordinary probe's accuracy: the same fit on the same rows.
    plain = fit_probes({"pre": x_train}, {"pre": x_test}, train_labels, test_labels, classes, cfg)
    assert by_method["erm"].average == pytest.approx(plain[0].accuracy, abs=1e-9)
    only_erm = ProbeConfig(penalty=1e-3, steps=200, targets=("y",), worst_group="erm")
    assert [
        r.method
        for r in fit_group_probes(
            {"pre": x_train},
            {"pre": x_test},
            train_labels,
            test_labels,
            classes,
            ("y", "place"),
            only_erm,
        )
    ] == ["erm"]


# --------------------------------------------------------------------------- the data


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, 1.0])
def test_spurious_split_agrees_at_rho_in_train_and_balances_groups_in_test(rho):
    data = load_dataset(spurious(rho))
    train, test = data.train.labels, data.test.labels
    agree = (paired_class(train["digit"], 5) == train["coarse"]).double().mean().item()
    assert agree == round(rho * 2000) / 2000  # exact by construction
    assert torch.bincount(train["digit"], minlength=10).tolist() == [200] * 10
    assert train["coarse"].equal(train["object"] // 4)
    cells = torch.bincount(test["digit"] * 5 + test["coarse"], minlength=50)
    assert cells.tolist() == [20] * 50  # every group, equally often
    assert data.group_by == ("digit", "coarse") == groups_of(spurious(rho))
    assert data.train.overlay is not None and data.train.inputs.shape == (2000, 3, 32, 32)


def test_spurious_disagreements_spread_over_the_other_classes_and_object_target():
    data = load_dataset(spurious(0.0, n_train=5000))
    coarse, paired = data.train.labels["coarse"], paired_class(data.train.labels["digit"], 5)
    offsets = torch.bincount((coarse - paired) % 5, minlength=5)
    assert offsets[0] == 0 and bool((offsets[1:] > 1100).all())  # ~1,250 each
    by_object = load_dataset(spurious(0.8, n_test=400, spurious_target="object"))
    labels = by_object.train.labels
    assert (labels["digit"] == labels["object"]).double().mean().item() == 0.8
    assert by_object.group_by == ("digit", "object")
    assert (
        torch.bincount(
            by_object.test.labels["digit"] * 20 + by_object.test.labels["object"], minlength=200
        ).tolist()
        == [2] * 200
    )


def test_spurious_data_is_a_deterministic_function_of_the_seed():
    a, b = load_dataset(spurious(0.9, 300, 100)), load_dataset(spurious(0.9, 300, 100))
    assert torch.equal(a.train.inputs, b.train.inputs)
    assert torch.equal(a.test.overlay, b.test.overlay)
    plain = load_dataset(DataConfig(name="textures_v2", n_train=300, n_test=100))
    assert plain.group_by == () and groups_of(DataConfig(name="textures_v2")) == ()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"data": {"name": "textures_v2", "spurious_rho": 1.5}}, "data.spurious_rho"),
        ({"data": {"name": "cifar10", "spurious_rho": 0.9}}, "data.spurious_rho"),
        ({"data": {"name": "textures_v2", "spurious_rho": "high"}}, "data.spurious_rho"),
        ({"data": {"spurious_target": "digit"}}, "data.spurious_target"),
        ({"probe": {"worst_group": "always"}}, "probe.worst_group"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(raw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TrialConfig.from_dict(raw)


def test_null_rho_is_off():
    cfg = TrialConfig.from_dict({"data": {"name": "textures_v2", "spurious_rho": None}})
    assert cfg.data.spurious_rho is None and cfg.flat()["data.spurious_rho"] is None


# --------------------------------------------------------------------------- a real trial

TINY = {
    "data": {"name": "textures_v2", "n_train": 256, "n_test": 150, "spurious_rho": 0.9},
    "train": {"epochs": 1, "batch_size": 64},
    "model": {"widths": [8, 16], "head": {"hidden": 32, "out": 16}},
    "probe": {"steps": 30, "online_n": 64},
}


@pytest.fixture(scope="module")
def record() -> TrialRecord:
    return record_of(pretrain(TINY))


def test_a_trial_on_spurious_data_records_group_rows_and_metrics(record):
    rows = record.groups
    keys = {(r.tap, r.target, r.method) for r in rows}
    taps = ("pre", "layer1", "post")
    assert keys == {(t, y, m) for t in taps for y in ("digit", "coarse") for m in ("erm", "dfr")}
    assert all(r.n_groups == 50 and 0 <= r.worst_group <= r.average <= 1 for r in rows)
    for r in rows:
        assert record.metrics[M.worst_group(r.target, r.tap, r.method)] == r.worst_group
        assert record.metrics[M.group_average(r.target, r.tap, r.method)] == r.average
    gap = M.worst_group("digit", "gap", "erm")
    pre, post = M.worst_group("digit", "pre", "erm"), M.worst_group("digit", "post", "erm")
    assert record.metrics[gap] == pytest.approx(record.metrics[pre] - record.metrics[post])
    again = TrialRecord.from_json(record.to_json())
    assert again.groups == rows
    old = json.loads(record.to_json())
    del old["groups"]  # a record written before worst-group rows existed
    assert TrialRecord.from_dict(old).groups == []


def test_groups_table_builds_and_the_summary_shows_pre_and_post(record):
    flat = record.flat_config()
    trials = [
        Trial(f"t{seed}", FINISHED, {**flat, "train.seed": seed}, seed=seed, record=record)
        for seed in (0, 1)
    ]
    tables = build_tables("s", trials, {"sweep": "s"}, "train.seed")
    groups = tables["groups"].to_pandas()
    assert len(groups) == len(record.groups)  # one setting, every row over 2 seeds
    assert (groups["n"] == 2).all() and (groups["worst_std"] == 0).all()
    assert tables["groups"].schema.field("worst_mean").type == "double"
    row = groups[(groups["tap"] == "pre") & (groups["target"] == "digit")]
    row = row[row["method"] == "dfr"].iloc[0]
    assert row["worst_mean"] == pytest.approx(record.metrics[M.worst_group("digit", "pre", "dfr")])
    lines = pre_post_lines(groups, [], _short, markdown=True)
    assert "| target | method | pre avg | pre worst | post avg | post worst |" in lines
    gaps = tables["gaps"].to_pandas()
    summary = Summary("s", Path("."), [], {FINISHED: 2}, gaps, groups=groups)
    assert "Worst-group accuracy" in summary.markdown()
    assert "pre worst" in summary.terminal_table()
    empty = build_tables("s", [], {"sweep": "s"}, "train.seed")["groups"]
    assert empty.num_rows == 0 and "worst_mean" in empty.schema.names


def test_worst_group_metrics_are_checked_against_the_config():
    grouped = TrialConfig.from_dict(TINY)
    plain = TrialConfig.from_dict({"data": {"name": "textures_v2"}})
    assert check_metric("worst/digit/pre/erm", grouped) == ""
    assert metric_problem("worst/digit/pre/dfr", grouped) == ""
    assert "no groups" in check_metric("worst/digit/pre/erm", plain)
    assert "group targets" in check_metric("worst/object/pre/erm", grouped)
    erm_only = TrialConfig.from_dict({**TINY, "probe": {"worst_group": "erm"}})
    assert "probe.worst_group" in check_metric("average/digit/post/dfr", erm_only)
    assert "unknown tap" in metric_problem("worst/digit/layer9/erm", grouped)


def test_pandas_frame_of_no_rows_is_handled():
    assert pre_post_lines(pd.DataFrame(), [], _short, markdown=False) == []
