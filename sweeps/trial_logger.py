"""The Tune callback that mirrors every trial into MLflow (it runs in the driver).

One child run per trial (tag ``mlflow.parentRunId``): params = the full resolved trial config
(every default filled in, the same dotted keys and values as the tables' config columns),
metrics per report (step = epoch), the trial's record and resolved config as artifacts when it
finishes, FINISHED or FAILED with the error text. A run is named by the settings its sweep
varies (`head=mlp p_drop=0.5 seed=0`), so the runs table says which trial is which."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.experiment import Trial

from headsweep import metrics as M
from headsweep.configtree import POINT, VARIANT, flatten, resolve
from headsweep.health import UNMEASURED, assess
from headsweep.record import CONFIG_FILE, FILE
from sweeps.names import tag_equals
from sweeps.tracking import ERROR, HEALTH, MAX_TAG, PARENT, ROLE, SWEEP, TRIAL_ID, log_params
from trainables import TRAINABLES

log = logging.getLogger(__name__)

_TUNE_BOOKKEEPING = {
    "timestamp",
    "pid",
    "time_since_restore",
    "iterations_since_restore",
    "time_total_s",
    "time_this_iter_s",
    "done",
    "training_iteration",
}


class MLflowTrialLogger(tune.Callback):
    """Finds a trial's run by its trial-id tag before creating one, so a resumed sweep reuses its
    child runs. Picklable (Tune stores callbacks with the experiment for `Tuner.restore`): the
    client is created lazily and not pickled."""

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_run_id: str,
        sweep: str,
        trainable: str = "",
        axes: tuple[str, ...] = (),
    ) -> None:
        self.uri, self.experiment_id, self.parent_run_id, self.sweep = (
            uri,
            experiment_id,
            parent_run_id,
            sweep,
        )
        self.trainable = trainable
        self.axes = tuple(axes)  # the swept keys: what a child run is named by
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._logged: dict[str, dict[str, tuple[int, float]]] = {}  # trial -> key -> (step, v)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_runs": {}, "_logged": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # callbacks pickled by an older version (a sweep being resumed) lack the newer fields
        self.__dict__.update({"axes": (), "trainable": "", "_logged": {}, **state})

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """The resolved flat config; a callback pickled before trainables were recorded (an old
        sweep being resumed) logs the unresolved keys."""
        info = TRAINABLES.get(getattr(self, "trainable", ""))
        return info.flat_config(config) if info else flatten(resolve(config))

    def run_id(self, trial: Trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            f"{tag_equals(PARENT, self.parent_run_id)} and {tag_equals(TRIAL_ID, trial.trial_id)}",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=run_name(trial.config, self.axes) or str(trial),
                tags={
                    PARENT: self.parent_run_id,
                    TRIAL_ID: trial.trial_id,
                    SWEEP: self.sweep,
                    ROLE: "trial",
                },
            )
            run_id = run.info.run_id
            log_params(self.client, run_id, self.params(trial.config))
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.run_id(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        step = int(result.get(M.EPOCH, result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        fresh = unlogged(reportable(result), step, self._logged.setdefault(trial.trial_id, {}))
        metrics = [Metric(k, v, now, step) for k, v in fresh.items()]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(self.run_id(trial), metrics=metrics[start : start + 900])

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        run_id = self.run_id(trial)
        self._log_record(run_id, trial)
        health = assess(trial.last_result or {})
        if health != UNMEASURED:
            self.client.set_tag(run_id, HEALTH, health[:MAX_TAG])
        self.client.set_terminated(run_id, "FINISHED")

    def _log_record(self, run_id: str, trial: Trial) -> None:
        """The record and resolved config from the trial's last checkpoint, as artifacts."""
        checkpoint = trial.checkpoint
        if checkpoint is None or checkpoint.filesystem is None:
            return
        for name in (FILE, CONFIG_FILE):
            try:
                with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{name}") as f:
                    text = f.read().decode()
            except (FileNotFoundError, OSError):
                continue  # a trial stopped early by the scheduler has no record
            self.client.log_text(run_id, text, name)

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, "headsweep.retries", str(trial.num_failures))
        self.client.log_text(
            run_id, trial_error_text(trial), f"errors/attempt_{trial.num_failures}.txt"
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        run_id = self.run_id(trial)
        text = trial_error_text(trial)
        self.client.set_tag(run_id, ERROR, text[-MAX_TAG:])
        self.client.log_text(run_id, text, "error.txt")
        self.client.set_terminated(run_id, "FAILED")


def reportable(result: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a Tune result that are the trial's own: not the config (the run's
    params; Tune hands it nested under "config" and, flattened, as "config/..." keys) and not
    Tune's bookkeeping."""
    return {
        key: float(value)
        for key, value in result.items()
        if not (key == "config" or key.startswith(("config/", "config.")))
        and key not in _TUNE_BOOKKEEPING
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    }


def unlogged(
    metrics: dict[str, float], step: int, logged: dict[str, tuple[int, float]]
) -> dict[str, float]:
    """The metrics not yet logged at this step with this value, recorded into `logged`: the
    final report repeats the last epoch's training and online metrics at the same step, and
    would otherwise put each of them twice into the run's history."""
    fresh = {k: v for k, v in metrics.items() if logged.get(k) != (step, v)}
    logged.update({k: (step, v) for k, v in fresh.items()})
    return fresh


def axis_value(config: dict[str, Any], key: str) -> Any:
    """An axis's value in a trial: from the point Tune picked, or (a sweep stored before
    trials were handed base + point) walked down the config itself."""
    point = config.get(POINT)
    if isinstance(point, dict):
        return point.get(key, {})
    node: Any = config
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def setting_text(value: Any) -> str:
    """One axis value, short: a mapping axis by its name (or its values), floats in 3 digits."""
    if isinstance(value, dict):
        return str(
            value.get("name") or ",".join(f"{k.split('.')[-1]}={v}" for k, v in value.items())
        )
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_name(config: dict[str, Any], axes: tuple[str, ...] | list[str]) -> str:
    """A trial by the settings its sweep varies: `head=mlp p_drop=0.5 seed=0`; a variant axis
    by the keys it bundles (`head=none p_drop=0`, not `variant=head={'name': 'none'},...`)."""
    parts = []
    for key in axes:
        value = axis_value(config, key)
        items = value.items() if key == VARIANT and isinstance(value, dict) else [(key, value)]
        parts += [f"{k.split('.')[-1]}={setting_text(v)}" for k, v in items]
    return " ".join(parts)


def trial_error_text(trial: Trial) -> str:
    """The traceback Tune stored for a failed trial."""
    path = trial.error_file or ""
    try:
        if path and os.path.exists(path):
            return Path(path).read_text()
    except OSError:
        pass
    error = trial.get_error()
    return str(error) if error is not None else "trial failed (no error recorded)"
