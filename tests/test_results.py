"""Reading sweeps back on real sweep output (Ray Tune + SQLite MLflow): the tables of a real
sweep, idempotent analysis logged once to the parent run, comparison, failed trials, the
trials' records in their checkpoints and MLflow runs, MLflow params equal to the tables'
config columns, and sweeps stored before records existed."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import write_spec
from PIL import Image

from analysis.report import TABLES  # every table the analysis writes and logs
from analysis.tables import CONFIG_COLUMNS, build_tables
from headsweep.configtree import resolve
from headsweep.record import FILE, SCHEMA_VERSION
from sweeps import cli
from sweeps.locations import Locations, SweepError
from sweeps.provenance import drift, lock_hash
from sweeps.results import analyze_sweep, collect, compare_sweeps
from sweeps.tracking import TRIAL_ID, param_text
from trainables import TRAINABLES

pytestmark = pytest.mark.ray
SMALL = {
    "data": {"name": "digits_on_texture", "n_train": 256, "n_test": 128},
    "model": {"widths": [8, 16], "head": {"hidden": 32, "out": 16}},
    "train": {"epochs": 2, "batch_size": 64},
    "probe": {"steps": 30, "online_n": 64},
}


@pytest.fixture(scope="module")
def sweep(ray_session, tmp_path_factory):
    """2 heads x 2 drop rates x 2 seeds, finished."""
    tmp = tmp_path_factory.mktemp("analysis")
    spec = write_spec(
        tmp / "s.yaml",
        name="heads",
        base=SMALL,
        space={
            "model.head.name": {"grid": ["none", "mlp"]},
            "aug.p_drop": {"grid": [0.0, 1.0]},
            "train.seed": {"grid": [0, 1]},
        },
    )
    assert cli.main(["run", spec, "--name", "heads", "--root", str(tmp / "runs")]) == 0
    return Locations.make(tmp / "runs"), "heads"


def test_tables_have_documented_columns_and_dtypes(sweep):
    loc, name = sweep
    directory = loc.tables(name)
    frames = {t: pd.read_parquet(directory / f"{t}.parquet") for t in TABLES}
    trials = frames["trials"]
    assert len(trials) == 8 and set(trials["status"]) == {"finished"}
    for column, dtype in {
        "sweep": object,
        "trial_id": object,
        "status": object,
        "aug.p_drop": np.float64,
        "train.seed": np.int64,
        "model.head.name": object,
        "probe/digit/pre": np.float64,
        "wall_time_s": np.float64,
        "epochs_done": np.int64,
    }.items():
        assert column in trials, column
        if dtype is not object:
            assert trials[column].dtype == dtype, column
    assert trials["node_id"].notna().all()
    schema = pq.read_schema(directory / "trials.parquet")
    assert all(str(f.type) != "null" for f in schema)  # no untyped columns
    meta = schema.metadata
    for key in (b"sweep", b"spec_hash", b"git_revision", b"created_at", b"description"):
        assert meta[key], key

    probes = frames["probes"]
    assert set(probes["tap"]) == {"pre", "post", "layer1"}  # the mlp head's hidden layer too
    assert len(probes) == 4 * 3 * 2 + 4 * 3 * 3  # none: pre/post; mlp: pre/layer1/post
    assert probes["accuracy"].dtype == np.float64 and probes["dim"].dtype == np.int64
    assert probes["protocol"].str.startswith("sas(").all()

    gaps = frames["gaps"]
    assert list(gaps.columns[:2]) == ["model.head.name", "aug.p_drop"]
    assert len(gaps) == 2 * 2 * 3 and set(gaps["n"]) == {2}
    history = frames["history"]
    assert len(history) == 8 * 2 and history["epoch"].dtype == np.int64
    assert "train/loss" in history and "online/digit/pre" in history


def test_gap_equals_pre_minus_post_averaged_over_seeds(sweep):
    loc, name = sweep
    probes = pd.read_parquet(loc.tables(name) / "probes.parquet")
    gaps = pd.read_parquet(loc.tables(name) / "gaps.parquet")
    wide = probes.pivot_table(
        index=["trial_id", "model.head.name", "aug.p_drop", "target"],
        columns="tap",
        values="accuracy",
    ).reset_index()
    wide["gap"] = wide["pre"] - wide["post"]
    expected = wide.groupby(["model.head.name", "aug.p_drop", "target"])["gap"].mean()
    for _, row in gaps.iterrows():
        key = (row["model.head.name"], row["aug.p_drop"], row["target"])
        assert row["gap_mean"] == pytest.approx(expected[key], abs=1e-12)
    none = gaps[gaps["model.head.name"] == "none"]
    assert (none["gap_mean"] == 0).all()  # the identity head: pre is post


def test_the_parent_run_and_the_tables_name_the_lock(sweep):
    """The parent run records the packages with the lock's hash and any drift from it
    (sweeps.provenance); the tables carry the lock, which headsweep reproduce's report shows."""
    loc, name = sweep
    versions = json.loads(loc.tracker().find_sweep(name).data.tags["headsweep.versions"])
    assert versions["lock"] == lock_hash() != "none"
    drifted = versions["lock_drift"] != "none"  # make test-latest runs other releases
    assert drifted == bool(drift())
    meta = pq.read_schema(loc.tables(name) / "trials.parquet").metadata
    assert meta[b"lock"].decode() == lock_hash() + ("+drift" if drifted else "")


def test_analysis_twice_is_byte_identical_and_logs_one_copy(sweep):
    loc, name = sweep
    directory = loc.tables(name)
    before = {t: (directory / f"{t}.parquet").read_bytes() for t in TABLES}
    figures = {p.name: p.read_bytes() for p in (directory / "figures").glob("*.png")}
    analyze_sweep(name, loc)
    analyze_sweep(name, loc)
    for table in TABLES:
        assert (directory / f"{table}.parquet").read_bytes() == before[table], table
    for path in (directory / "figures").glob("*.png"):
        assert path.read_bytes() == figures[path.name]
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    client = tracker.client
    listed = [a.path for a in client.list_artifacts(parent.info.run_id, "analysis/tables")]
    assert sorted(listed) == sorted(f"analysis/tables/{t}.parquet" for t in TABLES)
    for key in client.get_run(parent.info.run_id).data.metrics:
        assert len(client.get_metric_history(parent.info.run_id, key)) == 1, key
    assert "gap/digit/max" in client.get_run(parent.info.run_id).data.metrics


def test_figures_are_written_with_one_line_per_head(sweep):
    loc, name = sweep
    figures = loc.tables(name) / "figures"
    for target in ("digit", "object", "coarse"):
        path = figures / f"{target}_vs_aug_p_drop.png"
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.size[0] > 800 and image.getextrema() != ((255, 255),) * 4
    assert (figures / "pre_vs_post_scatter.png").stat().st_size > 10_000
    md = (loc.tables(name) / "summary.md").read_text()
    assert "| head | p_drop | target |" in md and md.count("| mlp |") == 6


def test_the_analysis_timing_benchmark_times_every_figure_and_changes_nothing(sweep, capsys):
    """benchmarks/analysis_time.py on a finished sweep: every figure's savefig is timed, within
    the analysis, the stored files stay byte-identical and the figure writer is restored."""
    import importlib

    import analysis.figures

    bench = importlib.import_module("benchmarks.analysis_time")
    loc, name = sweep
    directory = loc.tables(name)
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    save = analysis.figures._save
    result = bench.main([name, "--root", str(loc.root), "--rounds", "1"])
    assert json.loads(capsys.readouterr().out) == result
    assert analysis.figures._save is save
    assert {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()} == before
    pngs = len(list((directory / "figures").glob("*.png")))
    assert len(result["rounds"]) == 1
    for row in result["rounds"]:
        assert row["figures"] == pngs > 0
        assert 0 < row["savefig_s"] < row["analysis_s"]
    assert result["with_mlflow_logging_s"] > 0


def test_compare_two_sweeps_side_by_side(sweep):
    loc, name = sweep
    text = compare_sweeps(name, name, loc)
    assert "gap B - A" in text and "0.000" in text


def test_records_sit_in_the_final_checkpoint_and_the_mlflow_child_runs(sweep):
    loc, name = sweep
    experiment = loc.root / "ray" / name
    trial_dirs = sorted(experiment.glob("contrastive_*"))
    assert len(trial_dirs) == 8
    for trial_dir in trial_dirs:
        records = list(trial_dir.glob(f"checkpoint_*/{FILE}"))
        assert len(records) == 1  # the final checkpoint only
        record = json.loads(records[0].read_text())
        assert record["schema_version"] == SCHEMA_VERSION and record["probes"]
        for checkpoint in trial_dir.glob("checkpoint_*"):  # the resolved config beside each
            assert json.loads((checkpoint / "config.json").read_text()) == record["config"]
    tracker = loc.tracker()
    for child in tracker.children(tracker.find_sweep(name)):
        files = {a.path for a in tracker.client.list_artifacts(child.info.run_id)}
        assert {FILE, "config.json"} <= files


def test_mlflow_params_equal_the_trials_table_config_columns(sweep):
    loc, name = sweep
    table = pq.read_table(loc.tables(name) / "trials.parquet")
    columns = json.loads(table.schema.metadata[CONFIG_COLUMNS.encode()])
    assert "model.head.preset" in columns and "optim.lars_eta" in columns  # defaults too
    rows = {row["trial_id"]: row for row in table.to_pylist()}
    tracker = loc.tracker()
    children = tracker.children(tracker.find_sweep(name))
    assert len(children) == len(rows) == 8
    for child in children:
        row = rows[child.data.tags[TRIAL_ID]]
        assert child.data.params == {key: param_text(row[key]) for key in columns}


def test_sweeps_stored_before_records_give_the_same_tables(sweep, tmp_path):
    """An old sweep: no record.json, and params.json holding the nested config itself (mapping
    axes merged by the driver, no base/point) - read through sweeps.legacy."""
    loc, name = sweep
    info = TRAINABLES["contrastive"]
    old = tmp_path / name
    shutil.copytree(loc.root / "ray" / name, old)
    for path in old.glob(f"*/checkpoint_*/{FILE}"):
        path.unlink()
    for params in old.glob("*/params.json"):
        params.write_text(json.dumps(resolve(json.loads(params.read_text()))))
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    new_tables = build_tables(
        name, collect(str(loc.root / "ray" / name), info, tracker, parent), {}, info.seed_key
    )
    old_tables = build_tables(name, collect(str(old), info, tracker, parent), {}, info.seed_key)
    for table in TABLES:
        assert old_tables[table].equals(new_tables[table]), table


def test_a_record_of_an_unknown_schema_fails_saying_what_to_do(sweep, tmp_path):
    loc, name = sweep
    copy = tmp_path / name
    shutil.copytree(loc.root / "ray" / name, copy)
    path = next(copy.glob(f"*/checkpoint_*/{FILE}"))
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(SweepError, match="headsweep version that ran it"):
        collect(str(copy), TRAINABLES["contrastive"])


def test_a_damaged_record_is_read_from_mlflow_or_listed_and_the_rest_analysed(sweep, capsys):
    """A finished trial's record truncated to 0 bytes (a disk fault, an interrupted copy):
    `analyze` takes the child run's copy and the tables equal the undamaged ones; with that
    copy gone too, the trial is listed as `record unreadable` with its path, the other seven
    are analysed, exit 1. Restored and re-analysed at the end (the sweep is shared)."""
    loc, name = sweep
    directory = loc.tables(name)
    analyze = ["analyze", name, "--root", str(loc.root)]
    assert cli.main(analyze) == 0
    before = {t: pd.read_parquet(directory / f"{t}.parquet") for t in TABLES}
    record = sorted((loc.root / "ray" / name).glob(f"*/checkpoint_*/{FILE}"))[0]
    trial_id = "_".join(record.parents[1].name.rsplit("_", 2)[-2:])
    tracker = loc.tracker()
    child = next(
        c for c in tracker.children(tracker.find_sweep(name)) if c.data.tags[TRIAL_ID] == trial_id
    )
    artifact = Path(child.info.artifact_uri.removeprefix("file://")) / FILE
    kept, copy = record.read_bytes(), artifact.read_bytes()
    try:
        record.write_bytes(b"")
        assert cli.main(analyze) == 0
        for table in TABLES:
            after = pd.read_parquet(directory / f"{table}.parquet")
            pd.testing.assert_frame_equal(after, before[table], obj=table)
        artifact.unlink()
        capsys.readouterr()
        assert cli.main(analyze) == 1
        out = capsys.readouterr().out
        assert f"record unreadable, not analysed: {trial_id} ({record}" in out, out
        trials = pd.read_parquet(directory / "trials.parquet").set_index("trial_id")
        assert trials.loc[trial_id, "status"] == "record unreadable"
        assert (trials["status"] == "finished").sum() == 7
        assert trial_id not in set(pd.read_parquet(directory / "probes.parquet")["trial_id"])
    finally:
        record.write_bytes(kept)
        artifact.write_bytes(copy)
    assert cli.main(analyze) == 0
    for table in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(directory / f"{table}.parquet"), before[table]
        )


@pytest.mark.parametrize("all_fail", [False, True])
def test_failed_trials_are_kept_and_all_failed_sweeps_analyse(ray_session, tmp_path, all_fail):
    # A learning rate that makes the loss non-finite fails the trial inside Tune (data that
    # no trial can find is refused before the sweep starts).
    good = {"name": "adam"}
    bad = {"name": "sgd", "lr": 1.0e12, "momentum": 0.0}
    spec = write_spec(
        tmp_path / "f.yaml",
        name="partly",
        base={**SMALL, "loss": {"name": "spectral"}},
        space={"optim": {"grid": [bad, {**bad, "lr": 2.0e12}] if all_fail else [good, bad]}},
    )
    root = tmp_path / "runs"
    assert cli.main(["run", spec, "--name", "f", "--root", str(root)]) == 1
    loc = Locations.make(root)
    summary = analyze_sweep("f", loc)
    trials = pd.read_parquet(loc.tables("f") / "trials.parquet")
    assert len(trials) == 2
    failed = trials[trials["status"] == "failed"]
    assert len(failed) == (2 if all_fail else 1)
    assert failed["error"].str.contains("loss became").all()
    probes = pd.read_parquet(loc.tables("f") / "probes.parquet")
    gaps = pd.read_parquet(loc.tables("f") / "gaps.parquet")
    if all_fail:
        assert probes.empty and gaps.empty
        assert "accuracy" in probes.columns and "gap_mean" in gaps.columns  # schema kept
        assert "no finished trials" in summary.terminal_table()
    else:
        assert len(gaps) == 3  # the finished trial's three targets
