"""What every trainable does at the Ray boundary: size torch to the trial's resources and turn
a headsweep `on_epoch` callback into `tune.report` calls."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ray import tune

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
VARIANT = "variant"  # a spec axis whose values bundle dotted-key overrides across sections


def resolve_variant(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config as Tune hands it over, with its `variant` bundle (if any) applied."""
    from headsweep.config import merge, unflatten

    config = dict(config)
    variant = config.pop(VARIANT, None)
    return merge(config, unflatten(variant)) if variant else config


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
    import ray

    return ray.get_runtime_context().get_node_id()


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Only finite-or-not numbers travel as metrics; strings go to params/tags instead."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def report(
    metrics: Mapping[str, Any], state: Any = None, extra_files: Mapping[str, str] = ()
) -> None:
    """tune.report, with a checkpoint directory holding `state.save(...)` when a state is given
    (and any small text files, e.g. the final result as JSON)."""
    if state is None and not extra_files:
        tune.report(dict(metrics))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if state is not None:
            state.save(Path(tmp) / STATE_FILE)
        for name, text in dict(extra_files).items():
            (Path(tmp) / name).write_text(text)
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(tmp))


def restored_state() -> dict[str, Any] | None:
    """The training state of the latest checkpoint when Tune resumes this trial, else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        path = os.path.join(directory, STATE_FILE)
        if not os.path.exists(path):
            return None
        from headsweep import load_checkpoint

        state = load_checkpoint(path)
    log.info("resuming from checkpoint at epoch %s", state.get("epoch"))
    return state


def check_finite(metrics: Mapping[str, float], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = metrics.get(key)
        if value is not None and not math.isfinite(value):
            raise FloatingPointError(f"{key} became {value}")
