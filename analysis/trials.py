"""What the analysis reads: one `Trial` per trial of a sweep, however it was stored.

A finished trial carries the trainable's typed `TrialRecord` (config, probe rows, per-epoch
history, timings); every trial carries the flat resolved config, its status, and what the
sweep's runner observed (epochs reported, wall time, node). The sweeps side builds these from a
Tune experiment directory and MLflow (`sweeps.results.collect`); tests build them by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from headsweep.record import TrialRecord

FINISHED, FAILED, RUNNING, STOPPED = "finished", "failed", "running", "stopped_early"
# A finished trial whose stored record (and the child run's copy) cannot be read: listed with
# the path in `error`, never analysed.
UNREADABLE = "record unreadable"
STATUSES = (FINISHED, FAILED, RUNNING, STOPPED, UNREADABLE)


@dataclass
class Trial:
    trial_id: str
    status: str  # finished | failed | running | stopped_early
    config: dict[str, Any]  # flat, resolved (defaults filled in), typed
    seed: int = 0
    record: TrialRecord | None = None  # what the trainable recorded (finished trials)
    # Per-epoch metrics as reported, for trials without a record (running, failed, stopped).
    reported: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)  # metrics of the last report
    epoch_times: dict[int, float] = field(default_factory=dict)  # runner's clock per epoch (s)
    epochs_done: int = 0
    wall_time_s: float = math.nan
    node_ip: str | None = None
    node_id: str | None = None
    error: str = ""
    run_id: str = ""

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict of metrics per epoch: the record's, else what was reported."""
        return self.record.history if self.record is not None else self.reported

    def metrics(self) -> dict[str, Any]:
        """The final metrics of the trials table: the record's, else the last report's."""
        return self.record.table_metrics() if self.record is not None else self.last
