"""The driver's clock around its trials, and the analysis stack loaded while the last trials run.

`SweepClock` is a Tune callback in the driver: it notes when the first trial started and when
the last one ended (wall-clock epoch seconds, as Tune's callbacks see them); the driver puts
them on the sweep's parent run as `headsweep.timing.*` tags, with when its process and the
sweep started, so a benchmark (`benchmarks/sweep.py`) can split a sweep's wall time into the
trials and the fixed cost before the first and after the last.

Once every trial has been created and none waits for a slot, a trial that ends leaves a core
idle for the rest of the sweep: there the clock imports `sweeps.results` (pandas, pyarrow,
matplotlib, the analysis), which `headsweep run` needs after the last trial, so that the end of
the sweep does not pay for it. It runs in the Tune loop on the driver's main thread (no import
races with other threads) and never fails the sweep.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

log = logging.getLogger(__name__)

TIMING = "headsweep.timing"
PROCESS_START = f"{TIMING}.process_start"  # epoch s: the driver's process started
RUN_START = f"{TIMING}.run_start"  # epoch s: the driver began this sweep (driver.run/resume)
FIRST_TRIAL_START = f"{TIMING}.first_trial_start"  # epoch s: Tune started the first trial
LAST_TRIAL_END = f"{TIMING}.last_trial_end"  # epoch s: the last trial completed or failed
FIT_END = f"{TIMING}.fit_end"  # epoch s: Tuner.fit returned
# process start -> first trial start, for the first sweep a process drives (`headsweep run`)
BEFORE_FIRST_TRIAL = f"{TIMING}.before_first_trial_s"
PREFETCH = "sweeps.results"  # what `headsweep run` imports after the last trial
_PENDING = "PENDING"


def process_start_time(pid: int | None = None) -> float | None:
    """When a process started, in epoch seconds, from /proc (Linux; None elsewhere): its age
    on the boot-time clock that /proc/PID/stat counts its start on, back from now."""
    try:
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
        # field 22, counted after the command name (which may hold spaces and parentheses)
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))


class SweepClock(tune.Callback):
    """Picklable (Tune stores callbacks with the experiment): only numbers and flags."""

    def __init__(self, total: int, prefetch: str = PREFETCH) -> None:
        self.total, self.prefetch = total, prefetch
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.prefetched = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a resumed sweep's clock starts over: its times are this driver's
        self.__dict__.update({**state, "first_start": None, "last_end": None, "prefetched": False})

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        if self.first_start is None:
            self.first_start = time.time()

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._ended(trials)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._ended(trials)

    def _ended(self, trials: list[Trial]) -> None:
        self.last_end = time.time()
        if self.prefetched or not self.prefetch:
            return
        if len(trials) < self.total or any(t.status == _PENDING for t in trials):
            return  # trials still wait for a slot: the freed core is theirs
        self.prefetched = True
        try:
            importlib.import_module(self.prefetch)
        except Exception as exc:  # the analysis reports its own failure later, if it has one
            log.debug("could not load %s early: %s", self.prefetch, exc)

    def tags(
        self, run_start: float, fit_end: float, process_start: float | None = None
    ) -> dict[str, str]:
        """The `headsweep.timing.*` tags of what this driver saw, in epoch seconds; with the
        process's start (the first sweep a process drives), also the fixed cost before the
        first trial."""
        times = {
            PROCESS_START: process_start,
            RUN_START: run_start,
            FIRST_TRIAL_START: self.first_start,
            LAST_TRIAL_END: self.last_end,
            FIT_END: fit_end,
        }
        out = {key: f"{value:.3f}" for key, value in times.items() if value is not None}
        if process_start is not None and self.first_start is not None:
            out[BEFORE_FIRST_TRIAL] = f"{self.first_start - process_start:.3f}"
        return out


def timing(tags: Mapping[str, str]) -> dict[str, float]:
    """The `headsweep.timing.*` tags of a parent run as numbers, keyed without the prefix."""
    out = {}
    for key, value in tags.items():
        if key.startswith(f"{TIMING}."):
            try:
                out[key.removeprefix(f"{TIMING}.")] = float(value)
            except ValueError:
                continue
    return out
