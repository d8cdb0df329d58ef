"""Pruning trial checkpoints without breaking resume.

Tune's `CheckpointConfig(num_to_keep=...)` deletes a superseded checkpoint as soon as the newer
one is registered, but the experiment snapshot that `Tuner.restore` reads is written only every
few seconds (`TUNE_GLOBAL_CHECKPOINT_S`, which the driver pins) and synced asynchronously. A
driver killed in between leaves a snapshot that points at a deleted checkpoint, and the resumed
trial fails with "Could not recover from checkpoint as it does not exist on storage anymore"
(seen in CI with one-second epochs). This callback deletes a checkpoint only once a newer one has
been known for `grace_s` seconds (the driver uses ten snapshot periods), so the checkpoint any
durable snapshot names still exists.
"""

from __future__ import annotations

import logging
import posixpath
import time

from pyarrow import fs
from ray import tune

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

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.grace_s
        for history in self._seen.values():
            settled = [i for i, (seen_at, _) in enumerate(history) if seen_at <= cutoff]
            if not settled:
                continue
            keep_from = settled[-1]  # the newest checkpoint a durable snapshot may name
            for _, old in history[:keep_from]:
                try:
                    _filesystem(old).delete_dir(old.path)
                except (FileNotFoundError, OSError) as exc:  # already gone: nothing to free
                    log.debug("could not delete %s: %s", old.path, exc)
            del history[:keep_from]


def _filesystem(checkpoint: tune.Checkpoint) -> fs.FileSystem:
    """Where a checkpoint lives (Tune's checkpoints always carry their filesystem)."""
    if checkpoint.filesystem is None:
        raise OSError(f"checkpoint {checkpoint.path} has no filesystem")
    return checkpoint.filesystem


def _older_siblings(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's checkpoints on storage that sort before this one (checkpoint_000003, ...)."""
    trial_dir, name = posixpath.split(checkpoint.path.rstrip("/"))
    try:
        entries = _filesystem(checkpoint).get_file_info(fs.FileSelector(trial_dir))
    except OSError:
        return []
    return [
        tune.Checkpoint(entry.path, filesystem=checkpoint.filesystem)
        for entry in sorted(entries, key=lambda e: e.base_name)
        if entry.type == fs.FileType.Directory
        and entry.base_name.startswith("checkpoint_")
        and entry.base_name < name
    ]
