"""Collect every trial of a sweep from what it stored, with no Ray running and after the cluster
is gone: Tune's experiment directory (typed config in params.json, every report in result.json;
local, s3:// or gs:// through pyarrow.fs) joined with the MLflow child runs (status, error text).

Failed and unfinished trials are kept, with their status, never dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

log = logging.getLogger(__name__)

FINISHED, FAILED, RUNNING, STOPPED = "finished", "failed", "running", "stopped_early"


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # finished | failed | running | stopped_early
    config: dict[str, Any]  # flat, resolved (defaults filled in), typed
    final: dict[str, Any] = field(default_factory=dict)  # the last report
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch reports
    error: str = ""
    run_id: str = ""


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode()
    except (FileNotFoundError, OSError):
        return None


def _resolved(trainable: str, config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, so every trial has every column; the raw config if it is invalid."""
    from headsweep.config import flatten
    from trainables import TRAINABLES
    from trainables.common import resolve_variant

    try:
        resolved = TRAINABLES[trainable].validate(config)
        tree = resolved.to_dict()
    except (ValueError, KeyError):
        tree = resolve_variant(config)
    return flatten(tree)


def _mlflow_runs(tracker: Any, parent: Any) -> dict[str, Any]:
    from sweeps.tracking import TRIAL_ID

    return {run.data.tags.get(TRIAL_ID, ""): run for run in tracker.children(parent)}


def collect(
    experiment_path: str, trainable: str, tracker: Any = None, parent: Any = None
) -> list[TrialRecord]:
    """All trials under a Tune experiment path, sorted by trial id."""
    from sweeps.tracking import ERROR

    fs, root = _filesystem(experiment_path)
    runs = _mlflow_runs(tracker, parent) if tracker is not None and parent is not None else {}
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except FileNotFoundError:
        entries = []
    records = []
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.type != pafs.FileType.Directory:
            continue
        params = _read_text(fs, f"{entry.path}/params.json")
        if params is None:
            continue
        trial_id = "_".join(entry.base_name.rsplit("_", 2)[-2:])  # see sweeps.tuner.trial_dirname
        results = [
            json.loads(line)
            for line in (_read_text(fs, f"{entry.path}/result.json") or "").splitlines()
            if line.strip()
        ]
        final = results[-1] if results else {}
        history = [r for r in results if not r.get("done")]  # the final report has the probes
        run = runs.get(trial_id)
        status = _status(final, run)
        error = run.data.tags.get(ERROR, "") if run is not None else ""
        records.append(
            TrialRecord(
                trial_id,
                status,
                _resolved(trainable, json.loads(params)),
                final,
                history,
                error,
                run.info.run_id if run else "",
            )
        )
    return sorted(records, key=lambda r: r.trial_id)


def _status(final: dict[str, Any], run: Any) -> str:
    mlflow_status = run.info.status if run is not None else ""
    if mlflow_status == "FAILED":
        return FAILED
    if final.get("done"):
        return FINISHED
    if mlflow_status == "FINISHED":  # ended without its final report: stopped by the scheduler
        return STOPPED
    return RUNNING if mlflow_status in ("", "RUNNING", "SCHEDULED") else FAILED
