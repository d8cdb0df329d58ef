"""The analysis package on hand-made trials with known answers: tables, gaps, figures, summary
and verdict text, all without Ray or MLflow (the same checks on a real sweep are in
tests/test_results.py)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.report import analyze
from analysis.tables import CONFIG_COLUMNS, build_tables, gaps_frame
from analysis.trials import FAILED, FINISHED, RUNNING, Trial
from headsweep import metrics as M
from headsweep.record import ProbeRow, TrialRecord

TABLES = ("trials", "probes", "gaps", "history")
TARGETS = ("object", "coarse", "digit")
META = {"sweep": "heads", "spec_hash": "abc123", "git_revision": "deadbeef", "experiment_path": "x"}


def config(head: str, p_drop: float, seed: int) -> dict:
    return {
        "data.name": "digits_on_texture",
        "data.n_train": 256,
        "model.widths": [8, 16],
        "model.head.name": head,
        "model.head.batch_norm": True,
        "aug.p_drop": p_drop,
        "optim.lr": 0.001,
        "train.seed": seed,
        "train.epochs": 2,
    }


def accuracy(head: str, p_drop: float, seed: int, target: str, tap: str) -> float:
    """Known numbers: the identity head has pre = post; the mlp head loses the digit post."""
    base = {"object": 0.8, "coarse": 0.9, "digit": 0.6}[target] + 0.01 * seed - 0.1 * p_drop
    if head == "none" or tap == "pre":
        return base
    return base - (0.2 * p_drop if target == "digit" else 0.05) - (0.01 if tap == "layer1" else 0)


def finished(index: int, head: str, p_drop: float, seed: int) -> Trial:
    taps = ("pre", "post") if head == "none" else ("pre", "layer1", "post")
    dims = {"pre": 16, "layer1": 32, "post": 16}
    probes = [
        ProbeRow(
            tap,
            target,
            accuracy(head, p_drop, seed, target, tap),
            "sas(reg=0.001)",
            dims[tap],
            256,
            128,
        )
        for target in TARGETS
        for tap in taps
    ]
    metrics = {M.probe(p.target, p.tap): p.accuracy for p in probes}
    for target in TARGETS:
        metrics[M.probe(target, "gap")] = (
            metrics[M.probe(target, "pre")] - metrics[M.probe(target, "post")]
        )
    history = [
        {M.EPOCH: epoch, M.LOSS: 3.0 - epoch, M.online("digit", "pre"): 0.5} for epoch in (1, 2)
    ]
    nested = {"model": {"head": {"name": head}}}
    record = TrialRecord("contrastive", nested, {**metrics, M.LOSS: 1.0}, probes, history,
                         {"total_s": 2.0}, "cpu", 8, {"cpu": 1.0, "gpu": 0.0}, "node")  # fmt: skip
    return Trial(
        trial_id=f"t{index:02d}",
        status=FINISHED,
        config=config(head, p_drop, seed),
        seed=seed,
        record=record,
        epoch_times={1: 1.0, 2: 2.0},
        epochs_done=2,
        wall_time_s=2.5,
        node_ip="10.0.0.1",
        node_id="node",
        run_id=f"run{index}",
    )


@pytest.fixture(scope="module")
def trials() -> list[Trial]:
    """2 heads x 2 drop rates x 2 seeds, finished."""
    grid = itertools.product(("none", "mlp"), (0.0, 1.0), (0, 1))
    return [finished(i, *point) for i, point in enumerate(grid)]


@pytest.fixture(scope="module")
def frames(trials):
    tables = build_tables("heads", trials, META, "train.seed")
    return tables, {name: table.to_pandas() for name, table in tables.items()}


def test_tables_have_documented_columns_and_dtypes(frames):
    tables, frames = frames
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
    assert trials["model.widths"].iloc[0] == "[8, 16]"  # lists as JSON text
    assert trials[M.dim("layer1")].notna().sum() == 4  # only the mlp head has a hidden layer
    schema = tables["trials"].schema
    assert all(str(f.type) != "null" for f in schema)  # no untyped columns
    for key in (b"sweep", b"spec_hash", b"git_revision", b"description", CONFIG_COLUMNS.encode()):
        assert schema.metadata[key], key

    probes = frames["probes"]
    assert set(probes["tap"]) == {"pre", "post", "layer1"}  # the mlp head's hidden layer too
    assert len(probes) == 4 * 3 * 2 + 4 * 3 * 3  # none: pre/post; mlp: pre/layer1/post
    assert probes["accuracy"].dtype == np.float64 and probes["dim"].dtype == np.int64
    assert probes["protocol"].str.startswith("sas(").all()
    mlp = probes[probes["model.head.name"] == "mlp"]
    assert mlp.groupby("tap")["tap_index"].first().to_dict() == {"pre": 0, "layer1": 1, "post": 2}

    gaps = frames["gaps"]
    assert list(gaps.columns[:2]) == ["model.head.name", "aug.p_drop"]
    assert len(gaps) == 2 * 2 * 3 and set(gaps["n"]) == {2}
    history = frames["history"]
    assert len(history) == 8 * 2 and history["epoch"].dtype == np.int64
    assert "train/loss" in history and "online/digit/pre" in history
    assert history["time_total_s"].tolist() == [1.0, 2.0] * 8


def test_gap_equals_pre_minus_post_averaged_over_seeds(frames):
    _, frames = frames
    probes, gaps = frames["probes"], frames["gaps"]
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
    digit = gaps[(gaps["model.head.name"] == "mlp") & (gaps["target"] == "digit")]
    assert digit.set_index("aug.p_drop")["gap_mean"].to_dict() == pytest.approx({0.0: 0, 1.0: 0.2})


def test_gaps_frame_on_known_numbers():
    rows = []
    for trial, (pre, post) in enumerate([(0.9, 0.6), (0.8, 0.7), (0.7, 0.7)]):
        for tap, acc in (("pre", pre), ("post", post), ("layer1", 0.5)):
            rows.append(
                {
                    "trial_id": f"t{trial}",
                    "head": "mlp",
                    "target": "digit",
                    "tap": tap,
                    "accuracy": acc,
                }
            )
    rows.append(
        {"trial_id": "t9", "head": "none", "target": "digit", "tap": "pre", "accuracy": 0.5}
    )
    rows.append(
        {"trial_id": "t9", "head": "none", "target": "digit", "tap": "post", "accuracy": 0.5}
    )
    out = gaps_frame(pd.DataFrame(rows), ["head"]).set_index("head")
    mlp = out.loc["mlp"]
    gaps = np.array([0.3, 0.1, 0.0])
    assert mlp["n"] == 3
    assert mlp["gap_mean"] == pytest.approx(gaps.mean())
    assert mlp["gap_std"] == pytest.approx(gaps.std(ddof=1))
    half = 4.302652729911275 * gaps.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 dof)
    assert mlp["gap_ci_low"] == pytest.approx(gaps.mean() - half)
    assert mlp["pre_mean"] == pytest.approx(0.8) and mlp["post_mean"] == pytest.approx(2 / 3)
    assert out.loc["none", "n"] == 1 and math.isnan(out.loc["none", "gap_ci_low"])


def run_analysis(trials, directory):
    return analyze("heads", trials, directory, experiment="heads", seed_key="train.seed", meta=META)


def test_analysis_twice_is_byte_identical(trials, tmp_path):
    run_analysis(trials, tmp_path)
    before = {t: (tmp_path / f"{t}.parquet").read_bytes() for t in TABLES}
    figures = {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("*.png")}
    summary = (tmp_path / "summary.md").stat().st_mtime_ns
    run_analysis(trials, tmp_path)
    for table in TABLES:
        assert (tmp_path / f"{table}.parquet").read_bytes() == before[table], table
    for path in (tmp_path / "figures").glob("*.png"):
        assert path.read_bytes() == figures[path.name]
    assert (tmp_path / "summary.md").stat().st_mtime_ns == summary  # not rewritten
    assert not list(tmp_path.rglob("*.tmp"))


def test_figures_are_written_with_one_line_per_head(trials, tmp_path):
    summary = run_analysis(trials, tmp_path)
    figures = tmp_path / "figures"
    for target in ("digit", "object", "coarse"):
        path = figures / f"{target}_vs_aug_p_drop.png"
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.size[0] > 800 and image.getextrema() != ((255, 255),) * 4
    assert (figures / "pre_vs_post_scatter.png").stat().st_size > 10_000
    md = (tmp_path / "summary.md").read_text()
    assert "| head | p_drop | target |" in md and md.count("| mlp |") == 6
    assert "8 of 8 trials finished" in summary.terminal_table()


@pytest.mark.parametrize("all_fail", [False, True])
def test_failed_trials_are_kept_and_all_failed_sweeps_analyse(trials, tmp_path, all_fail):
    error = "FileNotFoundError: ./missing/cifar-10-batches-py"
    failed = Trial("f1", FAILED, config("mlp", 0.0, 0), error=error, last={M.LOSS: 2.0})
    kept = [failed, Trial("f2", FAILED, config("mlp", 1.0, 0), error=error)]
    if not all_fail:
        kept[1] = trials[4]  # one finished mlp trial
    summary = run_analysis(kept, tmp_path)
    frames = {t: pd.read_parquet(tmp_path / f"{t}.parquet") for t in TABLES}
    assert len(frames["trials"]) == 2
    failures = frames["trials"][frames["trials"]["status"] == "failed"]
    assert len(failures) == (2 if all_fail else 1)
    assert failures["error"].str.contains("cifar-10-batches-py").all()
    assert failures[M.LOSS].iloc[0] == 2.0  # the last report's metrics are kept
    if all_fail:
        assert frames["probes"].empty and frames["gaps"].empty
        assert "accuracy" in frames["probes"].columns and "gap_mean" in frames["gaps"].columns
        assert "no finished trials" in summary.terminal_table()
    else:
        assert len(frames["gaps"]) == 3  # the finished trial's three targets


def test_running_trials_keep_their_reported_history(tmp_path):
    reported = [
        {M.EPOCH: 1, M.LOSS: 2.0, "time_total_s": 1.0, M.RESUMED_FROM: 0.0},
        {M.EPOCH: 2, M.LOSS: 1.0, "time_total_s": 2.0, M.RESUMED_FROM: 0.0},
    ]
    running = Trial("r1", RUNNING, config("mlp", 0.0, 0), reported=reported, last=reported[-1],
                    epoch_times={1: 1.0, 2: 2.0}, epochs_done=2)  # fmt: skip
    tables = build_tables("s", [running], META, "train.seed")
    history = tables["history"].to_pandas()
    assert history["train/loss"].tolist() == [2.0, 1.0]
    assert M.RESUMED_FROM not in history  # a report key, not a metric
    assert tables["probes"].num_rows == 0


def test_the_control_trained_before_a_sweep_without_one_is_its_calibration(trials, tmp_path):
    """`headsweep analyze` judges as the reproduction report does: a grid with no control
    (T7's weight decay, the bottleneck heads) gets the separate control's calibration, which
    also reaches the trend checks; a sweep's own control wins."""
    from analysis.verdicts import Calibration

    separate = Calibration(True, "separate control: PASS (digit 0.680)")
    headed = [t for t in trials if t.config["model.head.name"] == "mlp"]
    summary = analyze(
        "heads", headed, tmp_path / "a", experiment="heads", seed_key="train.seed", meta=META,
        separate=separate,
    )  # fmt: skip
    assert summary.calibration is separate
    assert "separate control: PASS" in (tmp_path / "a" / "summary.md").read_text()
    own = analyze(
        "heads", trials, tmp_path / "b", experiment="heads", seed_key="train.seed", meta=META,
        separate=separate,
    )  # fmt: skip
    assert own.calibration is not None and own.calibration is not separate
    assert own.calibration.ok is not None
