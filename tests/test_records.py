"""The typed trial record, the one compound-value mechanism (`apply_point` / `resolve`) and the
atomic writer: all pure Python, no torch, no Ray."""

import json

import pytest

from headsweep import metrics as M
from headsweep.atomic import write_if_changed, write_text, write_with
from headsweep.configtree import apply_point, resolve
from headsweep.record import SCHEMA_VERSION, ProbeRow, RecordError, TrialRecord


def record() -> TrialRecord:
    return TrialRecord(
        trainable="contrastive",
        config={"model": {"head": {"name": "mlp"}}, "train": {"seed": 1}},
        metrics={M.LOSS: 1.5, M.probe("digit", "pre"): 0.9, M.probe("digit", "post"): 0.7},
        probes=[
            ProbeRow("pre", "digit", 0.9, "sas(reg=0.001)", 128, 100, 50),
            ProbeRow("layer1", "digit", 0.8, "sas(reg=0.001)", 512, 100, 50),
            ProbeRow("post", "digit", 0.7, "sas(reg=0.001)", 16, 100, 50),
        ],
        history=[{M.EPOCH: 1, M.LOSS: 2.0}, {M.EPOCH: 2, M.LOSS: 1.5}],
        timings={"total_s": 3.0},
        device="cpu",
        steps=8,
        resources={"cpu": 1.0, "gpu": 0.0},
        node_id="n1",
    )


def test_record_round_trips_through_json_with_its_schema_version():
    original = record()
    raw = json.loads(original.to_json())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert TrialRecord.from_json(original.to_json()) == original


def test_table_metrics_add_dims_timings_and_resources():
    metrics = record().table_metrics()
    assert metrics[M.dim("layer1")] == 512 and metrics[M.time("total_s")] == 3.0
    assert metrics[M.resources("cpu")] == 1.0 and metrics[M.LOSS] == 1.5
    assert record().flat_config() == {"model.head.name": "mlp", "train.seed": 1}


def test_unknown_schema_versions_fail_with_what_to_do():
    raw = json.loads(record().to_json())
    raw["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordError, match="headsweep version that ran it"):
        TrialRecord.from_dict(raw)
    with pytest.raises(RecordError, match="not JSON"):
        TrialRecord.from_json("{")
    raw["schema_version"] = SCHEMA_VERSION
    del raw["probes"][0]["protocol"]
    with pytest.raises(RecordError, match="protocol"):
        TrialRecord.from_dict(raw)


def test_apply_point_merges_mappings_and_applies_the_variant_last():
    base = {"model": {"head": {"name": "mlp", "preset": "sas"}}, "train": {"epochs": 5}}
    config = apply_point(
        base,
        {
            "model.head": {"name": "fixed_reweight", "kappa": 1.05},
            "aug.p_drop": 0.5,
            "variant": {"train.epochs": 0, "model.head": {"kappa": 1.2}},
        },
    )
    assert config["model"]["head"] == {"name": "fixed_reweight", "preset": "sas", "kappa": 1.2}
    assert config["aug"] == {"p_drop": 0.5} and config["train"]["epochs"] == 0
    assert "variant" not in config
    assert base["model"]["head"] == {"name": "mlp", "preset": "sas"}  # not mutated


def test_resolve_reads_both_layouts_tune_has_handed_over():
    point = {"model.head": {"name": "none"}, "variant": {"optim.lr": 0.1}}
    base = {"model": {"head": {"preset": "sas"}}, "optim": {"lr": 1.0}}
    new = resolve({"base": base, "point": point})
    # before base + point: mapping axes pre-merged by the driver, the variant merged here
    old = resolve({"model": {"head": {"preset": "sas", "name": "none"}}, "optim": {"lr": 1.0},
                   "variant": {"optim.lr": 0.1}})  # fmt: skip
    assert (
        new == old == {"model": {"head": {"preset": "sas", "name": "none"}}, "optim": {"lr": 0.1}}
    )


def test_atomic_writes_leave_no_temp_files_and_skip_unchanged_content(tmp_path):
    path = tmp_path / "deep" / "out.txt"
    write_text(path, "a")
    assert path.read_text() == "a"
    assert not write_if_changed(path, b"a") and write_if_changed(path, b"b")

    def fail(tmp: str) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_with(path, fail)
    assert path.read_text() == "b"  # the previous version survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]
