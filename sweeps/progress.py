"""Live progress for the terminal: a line per trial event and a status line every few seconds
(trials done / running / failed and the best pre/post so far). A Tune callback in the driver,
stateless between calls (counts come from the trial list), so it survives `Tuner.restore`."""

from __future__ import annotations

import time
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from headsweep import metrics as M
from headsweep.health import USABLE, assess
from sweeps.trial_logger import run_name, trial_error_text

_DONE, _FAILED, _RUNNING = "TERMINATED", "ERROR", "RUNNING"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class Progress(tune.Callback):
    def __init__(
        self, total: int, metric: str, mode: str, axes: list[str], every_s: float = 15.0
    ) -> None:
        self.total, self.metric, self.mode, self.axes, self.every_s = (
            total,
            metric,
            mode,
            axes,
            every_s,
        )
        self.partner = M.partner(metric)
        self._started = time.monotonic()
        self._last = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._started, self._last = time.monotonic(), 0.0

    def _label(self, trial: Trial) -> str:
        return f"{trial.trial_id} {run_name(trial.config, self.axes)}"

    def _print(self, text: str) -> None:
        elapsed = int(time.monotonic() - self._started)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}", flush=True)

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._print(f"start   {self._label(trial)}")

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        result = trial.last_result or {}
        score = ""
        if self.metric in result:
            score = f"  {self.metric}={_fmt(result[self.metric])}"
            if self.partner in result:
                score += f" post={_fmt(result[self.partner])}"
        health = assess(result)
        if health not in USABLE:  # docs/science.md §11: shown, never averaged
            score += f"  DID NOT TRAIN: {health}"
        self._print(f"done    {self._label(trial)}{score}")

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        lines = [ln for ln in trial_error_text(trial).strip().splitlines() if ln.strip()]
        self._print(f"FAILED  {self._label(trial)}: {lines[-1] if lines else 'see MLflow'}")

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        counts = {s: sum(t.status == s for t in trials) for s in (_DONE, _RUNNING, _FAILED)}
        line = (
            f"{counts[_DONE]}/{self.total} done · {counts[_RUNNING]} running · "
            f"{counts[_FAILED]} failed"
        )
        best = self.best(trials)
        if best is not None:
            line += f" · best {self.metric} {_fmt(best[0])}"
            if best[1] is not None:
                line += f" (post {_fmt(best[1])})"
        self._print(line)

    def best(self, trials: list[Trial]) -> tuple[float, float | None] | None:
        scored = [
            t.last_result
            for t in trials
            if t.last_result and isinstance(t.last_result.get(self.metric), int | float)
        ]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        result = pick(scored, key=lambda r: r[self.metric])
        return result[self.metric], result.get(self.partner)
