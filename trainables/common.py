"""What every trainable does at the Ray boundary: size torch to the trial's resources, turn a
headsweep `on_epoch` callback into `tune.report` calls, and checkpoint with the resolved config
(and, at the end, the trial's record) beside the state."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import ray
import torch
from ray import tune

from headsweep import load_checkpoint
from headsweep.atomic import write_text
from headsweep.record import CONFIG_FILE, FILE, TrialRecord

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


class Saveable(Protocol):
    def save(self, path: str | os.PathLike[str]) -> None: ...


def use_trial_resources() -> dict[str, float]:
    """Set torch's thread count from the CPUs Tune gave this trial; report what was granted.
    GPUs need no code here: Ray sets CUDA_VISIBLE_DEVICES, so `device: auto` finds the
    trial's (possibly shared, fractional) GPU."""
    bundles = tune.get_context().get_trial_resources().bundles
    cpus = sum(b.get("CPU", 0) for b in bundles)
    gpus = sum(b.get("GPU", 0) for b in bundles)
    torch.set_num_threads(max(1, int(cpus)))
    return {"cpu": cpus, "gpu": gpus}


def node_id() -> str:
    """The Ray node this trial runs on (recorded so results show where each trial ran)."""
    node: str = ray.get_runtime_context().get_node_id()
    return node


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Only finite-or-not numbers travel as metrics; strings go to params/tags instead."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def report(
    metrics: Mapping[str, Any],
    state: Saveable | None = None,
    files: Mapping[str, str] | None = None,
) -> None:
    """tune.report, with a checkpoint directory when a state or files are given: the state as
    `state.save(...)` writes it, and small text files (the resolved config, the record)."""
    if state is None and not files:
        tune.report(dict(metrics))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if state is not None:
            state.save(Path(tmp) / STATE_FILE)
        for name, text in (files or {}).items():
            write_text(Path(tmp) / name, text)
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(tmp))


def config_file(config: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as the file saved beside every checkpoint."""
    return {CONFIG_FILE: json.dumps(config, indent=1)}


def final_files(record: TrialRecord) -> dict[str, str]:
    """What the final checkpoint holds besides the state: the record and the config."""
    return {FILE: record.to_json(), **config_file(record.config)}


def restored_state() -> dict[str, Any] | None:
    """The training state of the latest checkpoint when Tune resumes this trial, else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        path = os.path.join(directory, STATE_FILE)
        if not os.path.exists(path):
            return None
        state = load_checkpoint(path)
    log.info("resuming from checkpoint at epoch %s", state.get("epoch"))
    return state
