"""Sweeps on real Ray Tune with a real SQLite MLflow store: the quickstart end to end, the MLflow
UI, failure handling and retries, kill-and-resume (a crashed sweep seen as crashed, a second
driver refused, a truncated checkpoint skipped), SIGTERM, and the persisted Optuna study."""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import TINY_BASE, write_spec
from mlflow.tracking import MlflowClient

from analysis.tables import CONFIG_COLUMNS
from benchmarks.proc import descendants
from sweeps import cli
from sweeps.locations import Locations
from sweeps.lock import LOCK_FILE, driver_state
from sweeps.tracking import END_REASON, ERROR, PARENT, ROLE, TRIAL_ID, param_text

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
# Experiment snapshots every second (the driver's default is 10 s), so a driver killed a few
# one-second epochs into a trial has already recorded one of its checkpoints; the checkpoint
# pruner's grace period shrinks with it to 10 s and so runs during these tests too.
# Heartbeats every 2 s: a killed driver's sweep reads as crashed 8 s later (4 missed beats).
ENV = {
    **os.environ,
    "RAY_AUTH_MODE": "disabled",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "HEADSWEEP_HEARTBEAT_S": "2",
}


def sweep_runs(root: Path, name: str):
    loc = Locations.make(root)
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    assert parent is not None
    return tracker, parent, tracker.children(parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_quickstart_runs_end_to_end_and_the_ui_shows_every_trial(ray_session, tmp_path, capsys):
    root = tmp_path / "runs"
    code = cli.main(
        [
            "run",
            str(REPO / "sweeps/quickstart.yaml"),
            "--smoke",
            "--name",
            "qs",
            "--root",
            str(root),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4/4 done" in out or out.count("done    ") == 4
    assert "gap" in out and "95% CI" in out  # the final pre/post/gap table
    # the answer last: the T6 verdict (one seed: inconclusive by the rule, with the numbers)
    last = out.strip().splitlines()[-1]
    assert last.startswith("T6: INCONCLUSIVE") and "mlp digit gap p=0:" in last, last
    assert "seed(s) per setting" in last
    tracker, parent, children = sweep_runs(root, "qs")
    assert parent.data.tags[ROLE] == "parent"
    assert len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}
    heads = {c.data.params["model.head.name"] for c in children}
    assert heads == {"none", "mlp"}
    assert all("probe/digit/pre" in c.data.metrics for c in children)
    artifacts = {a.path for a in tracker.client.list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/spec.yaml" in artifacts
    # Every child's params are the full resolved config: the trials table's config columns.
    table = pq.read_table(Locations.make(root).tables("qs") / "trials.parquet")
    columns = json.loads(table.schema.metadata[CONFIG_COLUMNS.encode()])
    rows = {row["trial_id"]: row for row in table.to_pylist()}
    assert len(rows) == 4 and "model.head.kappa" in columns  # defaults included
    for child in children:
        row = rows[child.data.tags[TRIAL_ID]]
        assert child.data.params == {key: param_text(row[key]) for key in columns}

    # `headsweep ui` serves the same store; check it through MLflow's client over HTTP.
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "sweeps.cli", "ui", "--root", str(root), "--port", str(port)],
        env=ENV,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        while True:
            try:
                experiment = client.get_experiment_by_name("quickstart")
                break
            except Exception:
                if time.monotonic() > deadline or ui.poll() is not None:
                    raise
                time.sleep(1)
        runs = client.search_runs(
            [experiment.experiment_id], f"tags.`{PARENT}` = '{parent.info.run_id}'"
        )
        assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)

    code = cli.main(["status", "qs", "--root", str(root)])
    status = capsys.readouterr().out
    assert code == 0 and "4 finished" in status and "best probe/digit/pre" in status
    assert cli.main(["list", "--root", str(root)]) == 0
    assert "qs" in capsys.readouterr().out


def test_failing_trials_are_recorded_retried_and_the_rest_finish(ray_session, tmp_path, capsys):
    spec = write_spec(
        tmp_path / "fail.yaml",
        name="failing",
        max_failures=1,
        search={"metric": "probe/object/pre"},  # a metric both datasets report
        base={
            "data": {"name": "digits_on_texture", "n_train": 256, "n_test": 128},
            "model": {"widths": [8, 16]},
            "loss": {"name": "spectral"},
            "train": {"epochs": 1, "batch_size": 64},
            "probe": {"steps": 20, "online_n": 0},
        },
        space={
            "data": {
                "grid": [
                    {"name": "digits_on_texture"},
                    {"name": "cifar10", "root": str(tmp_path / "no-data")},
                ]
            },
            "optim": {"grid": [{"name": "adam"}, {"name": "sgd", "lr": 1.0e12, "momentum": 0.0}]},
        },
    )
    root = tmp_path / "runs"
    code = cli.main(["run", spec, "--name", "failing", "--root", str(root)])
    out = capsys.readouterr().out
    assert code == 1, out  # the sweep ran, but some trials failed
    tracker, parent, children = sweep_runs(root, "failing")
    assert len(children) == 4
    finished = [c for c in children if c.info.status == "FINISHED"]
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(finished) == 1 and len(failed) == 3
    assert finished[0].data.params["data.name"] == "digits_on_texture"
    errors = sorted(c.data.tags[ERROR] for c in failed)
    assert sum("cifar-10-batches-py" in e for e in errors) == 2  # the missing dataset, named
    assert sum("loss became" in e for e in errors) == 1  # the NaN loss
    for run in failed:  # max_failures: 1 -> each failing trial was tried twice
        assert run.data.tags["headsweep.retries"] == "1"
        files = {a.path for a in tracker.client.list_artifacts(run.info.run_id, "errors")}
        assert files == {"errors/attempt_1.txt"}
    assert (
        parent.data.tags["headsweep.state"] == "failed"
        or tracker.client.get_run(parent.info.run_id).data.tags["headsweep.state"] == "failed"
    )


def start_driver(spec: str, name: str, root: Path, env=None) -> subprocess.Popen:
    """`headsweep run` as its own process group, so a test can kill it like a user would."""
    command = [sys.executable, "-m", "sweeps.cli", "run", spec, "--name", name, "--root", str(root)]
    return subprocess.Popen(
        command,
        env=env or ENV,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def cli_process(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeps.cli", *args],
        env=ENV,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def resume(root: Path, name: str) -> subprocess.CompletedProcess:
    done = cli_process(["resume", name, "--root", str(root)])
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the sweep to make progress")
        time.sleep(0.2)


def _kill_driver_and_its_trials(driver: subprocess.Popen) -> None:
    """SIGKILL the driver's process group and every process under it, found before the kill
    (afterwards they are re-parented). Ray starts each worker in a process group of its own, so
    `killpg` alone leaves the trial's worker running: seen here, it trains on for ~3 s until it
    notices its raylet is gone, and on a loaded CI machine long enough to write more checkpoints
    or end its trial, leaving no unfinished trial to resume (2 of 3 CI runs on 2026-11-30)."""
    tree = descendants(driver.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _results(experiment: Path) -> dict[str, list[dict]]:
    out = {}
    # result.json reaches storage with the next experiment snapshot: after a SIGKILL the newest
    # trial may have none yet
    for trial_dir in sorted(experiment.glob("contrastive_*")):
        if not (trial_dir / "result.json").exists():
            continue
        lines = (trial_dir / "result.json").read_text().splitlines()
        out[trial_dir.name] = [json.loads(line) for line in lines if line.strip()]
    return out


def _unfinished_with_checkpoints(experiment: Path, at_least: int) -> Path | None:
    """A trial directory with `at_least` checkpoints, none of them its final one."""
    for trial_dir in sorted(experiment.glob("contrastive_*")):
        found = sorted(trial_dir.glob("checkpoint_*"))
        if len(found) >= at_least and not any((c / "record.json").exists() for c in found):
            return trial_dir
    return None


def _state(root: Path, name: str) -> str:
    parent = Locations.make(root).tracker().find_sweep(name)
    experiment = f"{parent.data.tags['headsweep.storage']}/{name}"
    return driver_state(parent.info.status, parent.data.tags, experiment)


KILL_EPOCHS = 8


def test_killed_driver_resumes_every_trial_exactly_once(tmp_path):
    spec = write_spec(
        tmp_path / "kill.yaml",
        name="killable",
        max_concurrent=1,
        checkpoint_every=1,
        base={
            # epochs of ~2 s (3,072 images), longer than the 1 s snapshot period plus the poll:
            # the kill lands on a snapshot that records an unfinished trial even on a loaded
            # CI machine (1,024-image epochs of 0.6 s let a whole sweep slip past the poll)
            "data": {"name": "digits_on_texture", "n_train": 3072, "n_test": 128},
            "model": {"widths": [16, 32]},
            # a trial that ends after the last snapshot is rerun from its checkpoint by design
            "train": {"epochs": KILL_EPOCHS, "batch_size": 64},
            "probe": {"steps": 20, "online_n": 0},
        },
        space={"aug.p_drop": {"grid": [0.0, 0.5, 1.0]}},
    )
    root = tmp_path / "runs"
    experiment = root / "ray" / "killable"
    # The default 30-s heartbeat: by heartbeats alone the lock would count as stale 2 minutes
    # after the kill; on this host the driver's process is gone at once.
    driver = start_driver(spec, "killable", root, {**ENV, "HEADSWEEP_HEARTBEAT_S": "30"})
    try:
        _wait_for(lambda: _unfinished_with_checkpoints(experiment, 1) is not None, 240, driver)
        assert _state(root, "killable") == "running"
        # A second driver on the live sweep is refused, naming the first.
        second = cli_process(["resume", "killable", "--root", str(root)])
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"pid {driver.pid} on" in second.stderr and "another driver" in second.stderr

        # Kill once a snapshot has recorded an unfinished trial's third checkpoint.
        def recorded() -> bool:
            trial_dir = _unfinished_with_checkpoints(experiment, 3)
            snapshots = list(experiment.glob("experiment_state-*.json"))
            return (
                trial_dir is not None
                and bool(snapshots)
                and max(p.stat().st_mtime for p in snapshots)
                > max(c.stat().st_mtime for c in trial_dir.glob("checkpoint_*"))
            )

        _wait_for(recorded, 240, driver)
        _kill_driver_and_its_trials(driver)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert _state(root, "killable") == "crashed"  # at once, not after 4 missed heartbeats
    # The interrupted trial's newest checkpoint, cut short: resume falls back to the one before.
    cut = _unfinished_with_checkpoints(experiment, 2)
    assert cut is not None
    newest = sorted(cut.glob("checkpoint_*"))[-1]
    (newest / "state.pt").write_bytes((newest / "state.pt").read_bytes()[:64])
    cut_epoch = int(newest.name.split("_")[1]) + 1  # checkpoint_00000k holds epoch k + 1

    assert time.monotonic() - killed_at < 5
    taken = resume(root, "killable")  # takes the dead driver's lock over at once
    assert "from a dead driver (its process is gone" in taken.stderr, taken.stderr
    after = _results(experiment)
    assert len(after) == 3
    for rows in after.values():
        assert sum(1 for r in rows if r.get("done")) == 1  # finished exactly once
        assert {r["epoch"] for r in rows if not r.get("done")} == set(range(1, KILL_EPOCHS + 1))
    resumed = {r["resumed_from_epoch"] for r in after[cut.name] if r.get("done")}
    assert resumed and 1 <= resumed.pop() < cut_epoch  # from an older intact checkpoint
    tracker, parent, children = sweep_runs(root, "killable")
    assert len(children) == 3
    assert {c.info.status for c in children} == {"FINISHED"}
    assert tracker.client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert not (experiment / LOCK_FILE).exists()
    # at the end of the sweep, each trial keeps just its newest checkpoint
    assert all(len(list(d.glob("checkpoint_*"))) == 1 for d in experiment.glob("contrastive_*"))


def test_sigterm_ends_the_parent_run_killed_with_the_reason(tmp_path):
    spec = write_spec(
        tmp_path / "term.yaml",
        name="terminated",
        max_concurrent=1,
        base={**TINY_BASE, "train": {"epochs": 6, "batch_size": 64}},
        space={"aug.p_drop": {"grid": [0.0]}},
    )
    root = tmp_path / "runs"
    experiment = root / "ray" / "terminated"
    driver = start_driver(spec, "terminated", root)
    try:  # once the trial has started: Tune (and so the driver's handler) is running
        _wait_for(lambda: any(experiment.glob("contrastive_*")), 240, driver)
        driver.send_signal(signal.SIGTERM)  # `kill PID`, a stopped job
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    output = driver.stdout.read()
    assert driver.returncode == 130, output
    _, parent, children = sweep_runs(root, "terminated")
    assert parent.info.status == "KILLED"
    assert "SIGTERM" in parent.data.tags[END_REASON]
    assert parent.data.tags["headsweep.state"] == "interrupted"
    assert "RUNNING" not in {c.info.status for c in children}
    assert not (experiment / LOCK_FILE).exists()


def test_optuna_study_survives_an_interrupted_sweep(tmp_path):
    import optuna

    spec = write_spec(
        tmp_path / "optuna.yaml",
        name="searched",
        max_concurrent=1,
        base={
            "data": {"name": "digits_on_texture", "n_train": 512, "n_test": 128},
            "model": {"widths": [8, 16]},
            "train": {"epochs": 2, "batch_size": 64},
            "probe": {"steps": 20, "online_n": 0},
        },
        space={
            "optim.lr": {"loguniform": [1.0e-4, 1.0e-2]},
            "loss.mi_lambda": {"uniform": [0.0, 1.0]},
        },
        search={
            "algorithm": "optuna",
            "sampler": "tpe",
            "seed": 0,
            "num_samples": 4,
            "metric": "probe/digit/pre",
            "mode": "max",
        },
    )
    root = tmp_path / "runs"
    storage = f"sqlite:///{root / 'optuna' / 'searched.db'}"
    driver = start_driver(spec, "searched", root)
    try:

        def two_done() -> bool:  # the study records a trial as soon as the driver sees it end
            # Read-only SQL: optuna.load_study would create the schema itself if the driver has
            # not yet, and the two schema writers collide (UNIQUE constraint on alembic_version).
            path = root / "optuna" / "searched.db"
            if not path.exists():
                return False
            try:
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    (done,) = db.execute(
                        "SELECT count(*) FROM trials JOIN studies USING (study_id) "
                        "WHERE study_name = 'searched' AND state = 'COMPLETE'"
                    ).fetchone()
            except sqlite3.OperationalError:  # no schema yet, or the driver holds a write lock
                return False
            return done >= 2

        _wait_for(two_done, 240, driver)
        driver.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    output = driver.stdout.read()
    assert driver.returncode == 130, output  # interrupted, with the resume hint
    assert "headsweep resume searched" in output
    tracker, parent, _ = sweep_runs(root, "searched")
    assert parent.info.status == "KILLED" and "interrupted" in parent.data.tags[END_REASON]
    before = optuna.load_study(study_name="searched", storage=storage)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in before.trials) < 4
    resume(root, "searched")
    study = optuna.load_study(study_name="searched", storage=storage)
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    tracker, parent, children = sweep_runs(root, "searched")
    assert len(children) == 4
    assert tracker.client.get_run(parent.info.run_id).info.status == "FINISHED"
