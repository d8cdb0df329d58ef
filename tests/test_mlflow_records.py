"""What a sweep leaves in MLflow, read back through MLflow's client: a model-training
experiment, child runs named by their settings, no config values as metrics, each final metric
once; and a driver that fails after the last trial ends its parent run FAILED, never RUNNING."""

import pytest
from conftest import TINY_BASE
from mlflow.tracking import MlflowClient

from sweeps import driver, lifecycle
from sweeps.locations import Locations, SweepError
from sweeps.results import analyze_sweep
from sweeps.spec import parse_spec
from sweeps.tracking import END_REASON, EXPERIMENT_KIND, MODEL_TRAINING

pytestmark = pytest.mark.ray


def tiny_spec(name: str, epochs: int = 2) -> object:
    return parse_spec(
        {
            "name": name,
            "trainable": "contrastive",
            "base": {**TINY_BASE, "train": {"epochs": epochs, "batch_size": 64}},
            "space": {"aug.p_drop": {"grid": [0.0, 0.5]}, "train.seed": {"grid": [0]}},
            "search": {"metric": "probe/digit/pre"},
            "resources": {"cpu": 1},
            "max_concurrent": 2,
            "checkpoint_every": 1,
        }
    )


def test_runs_read_back_through_mlflow(ray_session, tmp_path, monkeypatch):
    loc = Locations.make(tmp_path / "runs")
    outcome = driver.run(tiny_spec("recorded"), "recorded", loc, quiet=True)
    client = MlflowClient(loc.tracking_uri)
    experiment = client.get_experiment(outcome.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING  # the UI opens on the runs table
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [outcome.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["p_drop=0 seed=0", "p_drop=0.5 seed=0"]
    for child in children:
        metrics = child.data.metrics
        assert "probe/digit/pre" in metrics and "train/loss" in metrics
        assert not [k for k in metrics if k.startswith("config")]
        for key in metrics:  # each metric once per step: the final report repeats none
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert len(steps) == len(set(steps)), (key, steps)
        assert len(client.get_metric_history(child.info.run_id, "probe/digit/pre")) == 1
    runs_url, run_url = outcome.urls(loc.tracking_uri)
    assert runs_url == f"http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs"
    assert run_url == f"{runs_url}/{outcome.parent_run_id}"

    summary = analyze_sweep("recorded", loc)
    text = (summary.directory / "summary.md").read_text().splitlines()
    assert text[2].startswith("**Largest gap: pre − post = ") and "p_drop=" in text[2]
    logged = {a.path for a in client.list_artifacts(outcome.parent_run_id, "analysis")}
    assert "analysis/gaps.csv" in logged

    # A driver that fails after the last trial (here: a resume with nothing left to train,
    # whose results cannot be read) ends the parent run FAILED with the reason, not RUNNING.
    def unreadable(path: str) -> dict[str, int]:
        raise SweepError(f"cannot read the sweep's results at {path}: gone")

    monkeypatch.setattr(lifecycle, "tune_statuses", unreadable)
    with pytest.raises(SweepError, match="cannot read the sweep's results"):
        driver.resume("recorded", loc)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FAILED" and parent.data.tags["headsweep.state"] == "failed"
    assert "cannot read the sweep's results" in parent.data.tags[END_REASON]
    assert not (loc.root / "ray" / "recorded" / ".headsweep-driver.json").exists()
