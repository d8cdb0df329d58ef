"""Reading a sweep back, with no Ray running and after the cluster is gone: every trial from
Tune's experiment directory (its config in params.json, every report in result.json, its record
in the final checkpoint; local, s3:// or gs:// through pyarrow.fs) joined with the MLflow child
runs (status, error text); then the analysis (`analysis.report.analyze`) and its outputs logged
to the sweep's parent run; and two sweeps compared.

Failed and unfinished trials are kept, with their status, never dropped. A finished trial
whose stored record is damaged is read from its child run's copy in MLflow, and when no copy
is readable it is kept as `record unreadable` (the path and why in `error`): one bad file never
sinks a sweep's analysis. Sweeps stored before
trials wrote records are read through `sweeps.legacy`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from mlflow.entities import Run

from analysis.html_report import REPORT_HTML, write_report
from analysis.report import GAPS_CSV, TABLES, Summary, analyze, compare_text, headline
from analysis.reproduction import Record
from analysis.trials import FAILED, FINISHED, RUNNING, STOPPED, UNREADABLE, Trial
from headsweep import metrics as M
from headsweep.record import FILE, RecordError, SchemaMismatch, TrialRecord
from sweeps.legacy import record_from_report
from sweeps.locations import Locations, SweepError, experiment_in
from sweeps.tracking import ERROR, TRIAL_ID, Tracker
from trainables import TRAINABLES, Trainable

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint_dir_name"  # the key of a Tune result naming its checkpoint


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        fs, root = pafs.FileSystem.from_uri(path)
        return fs, root
    return pafs.LocalFileSystem(), path


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as stream:
            text: str = stream.read().decode()
            return text
    except (FileNotFoundError, OSError):
        return None


def _status(final: dict[str, Any], run: Run | None) -> str:
    mlflow_status = run.info.status if run is not None else ""
    if mlflow_status == "FAILED":
        return FAILED
    if final.get(M.DONE):
        return FINISHED
    if mlflow_status == "FINISHED":  # ended without its final report: stopped by the scheduler
        return STOPPED
    return RUNNING if mlflow_status in ("", "RUNNING", "SCHEDULED") else FAILED


def _record(
    fs: pafs.FileSystem,
    trial_dir: str,
    info: Trainable,
    config: dict[str, Any],
    reports: list,
    copy: Callable[[], str | None] = lambda: None,
) -> TrialRecord:
    """The record the trainable wrote beside its final checkpoint; when that file cannot be
    read (a disk fault, a truncated copy), the child run's copy in MLflow (`copy`); for a sweep
    stored before records existed, one rebuilt from its reports. RecordError, naming the path
    and why, when neither copy is readable."""
    final = reports[-1]
    checkpoint = final.get(CHECKPOINT_DIR)
    path = f"{trial_dir}/{checkpoint}/{FILE}"
    text = _read_text(fs, path) if checkpoint else None
    if text is None and not checkpoint:
        return record_from_report(info.name, config, final, reports[:-1])
    try:
        if text is None:
            raise RecordError("missing")
        return TrialRecord.from_json(text)
    except SchemaMismatch as exc:  # a record of another version, whole: not a damaged file
        raise SweepError(f"{path}: {exc}") from None
    except RecordError as damaged:
        backup = copy()
        if backup is not None:
            with contextlib.suppress(RecordError):
                record = TrialRecord.from_json(backup)
                log.warning("%s: %s; using the child run's copy from MLflow", path, damaged)
                return record
        raise RecordError(f"{path}: {damaged}; no readable copy in MLflow either") from None


def _mlflow_copy(tracker: Tracker | None, run: Run | None) -> Callable[[], str | None]:
    """A reader of the child run's `record.json` artifact (None when it has none)."""

    def read() -> str | None:
        if tracker is None or run is None:
            return None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = tracker.client.download_artifacts(run.info.run_id, FILE, tmp)
                return Path(local).read_text()
        except Exception:  # no artifact, or a store that cannot serve it: no copy
            return None

    return read


def collect(
    experiment_path: str,
    info: Trainable,
    tracker: Tracker | None = None,
    parent: Run | None = None,
) -> list[Trial]:
    """All trials under a Tune experiment path, sorted by trial id."""
    fs, root = _filesystem(experiment_path)
    runs: dict[str, Run] = {}
    if tracker is not None and parent is not None:
        runs = {run.data.tags.get(TRIAL_ID, ""): run for run in tracker.children(parent)}
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except FileNotFoundError:
        entries = []
    trials = []
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.type != pafs.FileType.Directory:
            continue
        params = _read_text(fs, f"{entry.path}/params.json")
        if params is None:
            continue
        trial_id = "_".join(entry.base_name.rsplit("_", 2)[-2:])  # see sweeps.tuner.trial_dirname
        reports = [
            json.loads(line)
            for line in (_read_text(fs, f"{entry.path}/result.json") or "").splitlines()
            if line.strip()
        ]
        final = reports[-1] if reports else {}
        reported = [r for r in reports if not r.get(M.DONE)]  # the final report has the probes
        run = runs.get(trial_id)
        status = _status(final, run)
        config = info.flat_config(json.loads(params))
        record, error = None, run.data.tags.get(ERROR, "") if run is not None else ""
        if status == FINISHED:
            try:
                copy = _mlflow_copy(tracker, run)
                record = _record(fs, entry.path, info, config, reports, copy)
            except RecordError as exc:
                status, error = UNREADABLE, str(exc)
        trials.append(
            Trial(
                trial_id=trial_id,
                status=status,
                config=record.flat_config() if record is not None else config,
                seed=int(config.get(info.seed_key, 0)),
                record=record,
                reported=reported,
                last=final,
                epoch_times={
                    int(r[M.EPOCH]): float(r.get("time_total_s", math.nan))
                    for r in reported
                    if M.EPOCH in r
                },
                epochs_done=int(final.get(M.EPOCH, len(reported)) or 0),
                wall_time_s=float(final.get("time_total_s", math.nan)),
                node_ip=final.get("node_ip"),
                node_id=final.get(M.NODE_ID),
                error=error,
                run_id=run.info.run_id if run is not None else "",
            )
        )
    return sorted(trials, key=lambda t: t.trial_id)


def _parent(name: str, loc: Locations) -> tuple[Tracker, Run]:
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    if parent is None:
        raise SweepError(f"no sweep named {name!r} in {loc.tracking_uri} (see `headsweep list`)")
    return tracker, parent


def _lock_of(tags: dict[str, str]) -> str:
    """The lock the sweep's driver ran (sweeps.lockfile), "+drift" when it differed from it;
    "" for a sweep run before the lock existed."""
    try:
        versions = json.loads(tags.get("headsweep.versions") or "{}")
    except ValueError:
        return ""
    lock = str(versions.get("lock", ""))
    drifted = versions.get("lock_drift", "none") != "none"
    return f"{lock}+drift" if lock and drifted else lock


def analyze_sweep(name: str, loc: Locations, log_to_mlflow: bool = True) -> Summary:
    """Collect, tabulate, draw and log one sweep (finished, running, or all failed)."""
    tracker, parent = _parent(name, loc)
    tags = parent.data.tags
    path = experiment_in(tags["headsweep.storage"], name)
    info = TRAINABLES[tags["headsweep.trainable"]]
    trials = collect(path, info, tracker, parent)
    meta = {
        "sweep": name,
        "spec_hash": tags.get("headsweep.spec_hash", ""),
        "git_revision": tags.get("mlflow.source.git.commit", "unknown"),
        "lock": _lock_of(tags),
        "experiment_path": path,
    }
    summary = analyze(
        name,
        trials,
        loc.tables(name),
        experiment=tracker.client.get_experiment(parent.info.experiment_id).name,
        seed_key=info.seed_key,
        meta=meta,
        separate=Record.read(loc.tables(name)).separate_control(),
    )
    write_report(summary)
    if log_to_mlflow:
        _log_to_parent(tracker, parent, summary)
    return summary


def _log_to_parent(tracker: Tracker, parent: Run, summary: Summary) -> None:
    """Tables, figures, summary.md and report.html as artifacts (overwritten in place);
    headline metrics logged only when their value changed, so re-running adds no duplicate
    history."""
    client, run_id, directory = tracker.client, parent.info.run_id, summary.directory
    for name in TABLES:
        client.log_artifact(run_id, str(directory / f"{name}.parquet"), "analysis/tables")
    for path in summary.figures:
        client.log_artifact(run_id, str(path), "analysis/figures")
    client.log_artifact(run_id, str(directory / "summary.md"), "analysis")
    client.log_artifact(run_id, str(directory / GAPS_CSV), "analysis")
    client.log_artifact(run_id, str(directory / REPORT_HTML), "analysis")
    metrics, tags = headline(summary)
    current = client.get_run(run_id).data
    for key, value in metrics.items():
        if not math.isfinite(value):
            continue
        if key not in current.metrics or not math.isclose(current.metrics[key], value):
            client.log_metric(run_id, key, value)
    for key, text in tags.items():
        if current.tags.get(key) != text:
            client.set_tag(run_id, key, text)


def read_gaps(name: str, loc: Locations) -> tuple[pd.DataFrame, list[str]]:
    path = loc.tables(name) / "gaps.parquet"
    if not path.exists():
        analyze_sweep(name, loc)
    table = pq.read_table(path)
    return table.to_pandas(), json.loads(table.schema.metadata[b"settings"])


def compare_sweeps(a: str, b: str, loc: Locations) -> str:
    """The gap tables of two sweeps side by side, joined on their shared setting columns."""
    gaps_a, settings_a = read_gaps(a, loc)
    gaps_b, settings_b = read_gaps(b, loc)
    return compare_text(a, gaps_a, settings_a, b, gaps_b, settings_b)
