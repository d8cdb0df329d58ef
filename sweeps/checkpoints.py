"""Pruning trial checkpoints without breaking resume.

Tune's `CheckpointConfig(num_to_keep=...)` deletes a superseded checkpoint as soon as the newer
one is registered, but the experiment snapshot that `Tuner.restore` reads is written only every
few seconds (`TUNE_GLOBAL_CHECKPOINT_S`, which the driver pins) and synced asynchronously. A
driver killed in between leaves a snapshot that points at a deleted checkpoint, and the resumed
trial fails with "Could not recover from checkpoint as it does not exist on storage anymore"
(seen in CI with one-second epochs). This callback deletes a checkpoint only once a newer one has
been known for `grace_s` seconds (the driver uses ten snapshot periods), so the checkpoint any
durable snapshot names still exists.

A checkpoint is deleted only once the newer one that supersedes it is intact on storage (its
files have the sizes `trainables.manifest` recorded): a newest checkpoint cut short leaves the
previous one for the resumed trial to fall back on (`trainables.common.restored_state`). When
every trial has ended, each keeps only its newest intact checkpoint (`on_experiment_end`): no
grace period is needed then, since no trial will continue from an older one.
"""

from __future__ import annotations

import logging
import time

from pyarrow import fs
from ray import tune
from ray.tune import ExperimentAnalysis

from trainables.manifest import problem, siblings

log = logging.getLogger(__name__)


class CheckpointPruner(tune.Callback):
    """Keeps, per trial, every checkpoint registered in the last `grace_s` seconds plus the newest
    one registered before that; deletes the older ones from storage (local or remote)."""

    def __init__(self, grace_s: float = 120.0) -> None:
        self.grace_s = grace_s
        self._seen: dict[str, list[tuple[float, tune.Checkpoint]]] = {}

    def __getstate__(self) -> dict:  # Tune pickles callbacks with the experiment: no history
        return {"grace_s": self.grace_s, "_seen": {}}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        now = time.monotonic()
        if trial.trial_id not in self._seen:  # first sight, also after a resume: adopt the
            # older checkpoints a previous driver left, so they go after the grace period too
            self._seen[trial.trial_id] = [(now, old) for old in _older_siblings(checkpoint)]
        self._seen[trial.trial_id].append((now, checkpoint))
        self._prune()

    def on_step_end(self, iteration, trials, **info) -> None:
        self._prune()

    def on_experiment_end(self, trials, **info) -> None:
        if any(t.status not in ("TERMINATED", "ERROR") for t in trials):
            return  # interrupted: a resume may still need the grace period's checkpoints
        for trial in trials:
            if trial.checkpoint is not None:
                prune_to_newest_intact(trial.checkpoint)
        self._seen.clear()

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.grace_s
        for history in self._seen.values():
            settled = [i for i, (seen_at, _) in enumerate(history) if seen_at <= cutoff]
            # the newest checkpoint a durable snapshot may name, if it is intact: until then
            # the older ones stay
            intact = [i for i in settled if not problem(*_where(history[i][1]), full=False)]
            if not intact:
                continue
            keep_from = intact[-1]
            for _, old in history[:keep_from]:
                _delete(old.filesystem, old.path)
            del history[:keep_from]


def prune_to_newest_intact(latest: tune.Checkpoint) -> None:
    """Delete every checkpoint of a trial but the newest intact one up to `latest`."""
    filesystem, path = _where(latest)
    older = [p for p in siblings(filesystem, path) if p < path.rstrip("/")]
    keep = next(
        (p for p in [path.rstrip("/"), *reversed(older)] if not problem(filesystem, p, full=False)),
        None,
    )
    if keep is None:
        return  # nothing intact: leave everything for a human to look at
    for old in older:
        if old < keep:
            _delete(filesystem, old)


def restore_missing(experiment_path: str) -> int:
    """Before a resume: recreate, empty, each trial checkpoint the snapshot names but storage no
    longer has (deleted by hand, lost with a node). Tune refuses to restore a trial from a
    missing checkpoint and fails it on every resume; from an empty one the trial falls back to
    its older checkpoints or starts over (`trainables.common.restored_state`). Returns how many
    it recreated."""
    try:
        trials = ExperimentAnalysis(experiment_path).trials
    except Exception as exc:  # no snapshot to read: Tune's own restore will say so
        log.debug("no trials to check in %s: %s", experiment_path, exc)
        return 0
    made = 0
    for trial in trials:
        checkpoint = trial.checkpoint
        if checkpoint is None or trial.status == "TERMINATED":
            continue
        filesystem, path = _where(checkpoint)
        if filesystem.get_file_info(path).type == fs.FileType.NotFound:
            log.warning("trial %s: checkpoint %s is gone; it falls back", trial.trial_id, path)
            filesystem.create_dir(path)
            made += 1
    return made


def _where(checkpoint: tune.Checkpoint) -> tuple[fs.FileSystem, str]:
    return _filesystem(checkpoint), checkpoint.path


def _delete(filesystem: fs.FileSystem | None, path: str) -> None:
    if filesystem is None:
        return
    try:
        filesystem.delete_dir(path)
    except (FileNotFoundError, OSError) as exc:  # already gone: nothing to free
        log.debug("could not delete %s: %s", path, exc)


def _filesystem(checkpoint: tune.Checkpoint) -> fs.FileSystem:
    """Where a checkpoint lives (Tune's checkpoints always carry their filesystem)."""
    if checkpoint.filesystem is None:
        raise OSError(f"checkpoint {checkpoint.path} has no filesystem")
    return checkpoint.filesystem


def _older_siblings(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's checkpoints on storage that sort before this one (checkpoint_000003, ...)."""
    path = checkpoint.path.rstrip("/")
    return [
        tune.Checkpoint(p, filesystem=checkpoint.filesystem)
        for p in siblings(_filesystem(checkpoint), path)
        if p < path
    ]
