"""What every trainable does at the Ray boundary: size torch to the trial's resources, turn a
headsweep `on_epoch` callback into `tune.report` calls, and checkpoint with the resolved config
(and, at the end, the trial's record) beside the state."""

from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import ray
import torch
from ray import tune

from headsweep import load_checkpoint
from headsweep.atomic import write_text
from headsweep.record import CONFIG_FILE, FILE, TrialRecord
from trainables.manifest import problem, siblings, write_manifest

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
# what `headsweep.TrainState.load_state_dict` reads: a state lacking one cannot be resumed
STATE_KEYS = ("model", "optimizer", "scheduler", "generator", "torch_rng", "epoch", "history")
StateCheck = Callable[[Mapping[str, Any]], str]  # "" when a state fits this trial, else why not


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
        write_manifest(tmp)  # last: what a resume verifies the copy on storage against
        try:
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(tmp))
        except OSError as exc:  # pyarrow's copy to storage names no path: say where, and why
            if exc.errno != errno.ENOSPC and "No space left" not in str(exc):
                raise
            where = _trial_dir()
            raise OSError(
                errno.ENOSPC,
                f"No space left on device: the trial's checkpoint could not be written to {where}"
                " (free space there, then `headsweep resume`)",
                where,
            ) from exc


def _trial_dir() -> str:
    """Where this trial's results and checkpoints go on the sweep's storage (Ray's storage
    context, a developer API; the trial's local directory where it is missing)."""
    context = tune.get_context()
    try:
        return str(context.get_storage().trial_fs_path)
    except Exception:  # an older or newer Ray without it
        try:
            return str(context.get_trial_dir())
        except Exception:  # outside a Tune trial: no place to name
            return "the sweep's storage"


def config_file(config: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as the file saved beside every checkpoint."""
    return {CONFIG_FILE: json.dumps(config, indent=1)}


def final_files(record: TrialRecord) -> dict[str, str]:
    """What the final checkpoint holds besides the state: the record and the config."""
    return {FILE: record.to_json(), **config_file(record.config)}


def restored_state(check: StateCheck | None = None) -> dict[str, Any] | None:
    """The training state to continue from when Tune resumes this trial, else None.

    Tune hands over the checkpoint its snapshot names; a checkpoint cut short (a full disk, a
    node lost mid-copy) or no longer loadable into this trial (`check`: e.g. an optimizer
    state lacking hyperparameters a newer version keeps) must not fail the trial for good, so
    the trial's older checkpoints are tried newest first, and with none intact it starts over
    (with a warning)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    filesystem = checkpoint.filesystem
    if filesystem is None:  # not a Tune storage checkpoint: only the given one can be tried
        candidates = [checkpoint.path]
    else:
        named = checkpoint.path.rstrip("/")
        older = [p for p in siblings(filesystem, named) if p < named]
        candidates = [named, *reversed(older)]
    for path in candidates:
        state, why = _load(checkpoint, path, check)
        if state is not None:
            if path != candidates[0]:
                log.warning("resuming from the older checkpoint %s instead", path)
            log.info("resuming from checkpoint at epoch %s", state.get("epoch"))
            return state
        log.warning("checkpoint %s is not usable: %s", path, why)
    log.warning("no intact checkpoint of this trial: it starts again from scratch")
    return None


def _load(
    checkpoint: tune.Checkpoint, path: str, check: StateCheck | None
) -> tuple[dict[str, Any] | None, str]:
    filesystem = checkpoint.filesystem
    if filesystem is not None:
        why = problem(filesystem, path)
        if why:
            return None, why
    candidate = (
        checkpoint
        if path == checkpoint.path.rstrip("/")
        else tune.Checkpoint(path, filesystem=filesystem)
    )
    try:
        with candidate.as_directory() as directory:
            file = os.path.join(directory, STATE_FILE)
            if not os.path.exists(file):
                return None, f"no {STATE_FILE} (a final checkpoint)"
            state = load_checkpoint(file)
    except Exception as exc:  # torch.load of a damaged file raises anything from EOF to pickle
        return None, f"{type(exc).__name__}: {exc}"
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        return None, f"no {', '.join(missing)} in {posixpath.basename(path)}/{STATE_FILE}"
    why = check(state) if check is not None else ""
    return (None, why) if why else (state, "")


def optimizer_check(optimizer: torch.optim.Optimizer) -> StateCheck:
    """A state fits when its optimizer's parameter groups carry every hyperparameter that
    `optimizer` (this trial's, built from its config) uses: checkpoints of an older LARS lack
    `eps`, `clip_lr`, `exclude_bias_n_norm` and would fail with a KeyError at the first step."""
    needed = set(optimizer.defaults)

    def check(state: Mapping[str, Any]) -> str:
        groups = state["optimizer"].get("param_groups", [])
        lacking = sorted({key for group in groups for key in needed - set(group)})
        return f"its optimizer state lacks {', '.join(lacking)}" if lacking else ""

    return check
