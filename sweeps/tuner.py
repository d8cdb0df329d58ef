"""From a validated `SweepSpec` to Tune objects: the param space, the searcher (grid, random or
Optuna with its study persisted in SQLite), the scheduler (ASHA) and the resource request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from headsweep import metrics as M
from headsweep.configtree import BASE, POINT, plain
from sweeps.spec import Axis, SweepSpec


def _domain(axis: Axis) -> Any:
    if axis.kind in ("grid", "choice"):
        values = list(axis.values)
        return tune.grid_search(values) if axis.kind == "grid" else tune.choice(values)
    if axis.kind == "uniform":
        return tune.uniform(axis.low, axis.high)
    if axis.kind == "loguniform":
        return tune.loguniform(axis.low, axis.high)
    return tune.randint(int(axis.low), int(axis.high))


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """What every trial is handed: the base config and the point Tune picks, one domain per
    axis under its dotted key. The trial resolves it with `headsweep.configtree.resolve`, the
    same `apply_point` that `SweepSpec.trial_config` uses, so mapping values and variants merge
    the same way everywhere."""
    return {BASE: plain(spec.base), POINT: {axis.key: _domain(axis) for axis in spec.space}}


class FinalMetricOptunaSearch(OptunaSearch):
    """OptunaSearch for metrics that only the final report carries (the frozen probes): the
    per-epoch reports without the metric are skipped instead of raising KeyError."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


def searcher(spec: SweepSpec, study_storage: Path | None, study_name: str) -> Searcher | None:
    s = spec.search
    if s.algorithm == "optuna":
        sampler = (
            optuna.samplers.GPSampler(seed=s.seed)
            if s.sampler == "gp"
            else optuna.samplers.TPESampler(seed=s.seed)
        )
        storage = None
        if study_storage is not None:
            study_storage.parent.mkdir(parents=True, exist_ok=True)
            storage = optuna.storages.RDBStorage(f"sqlite:///{study_storage.resolve()}")
        return FinalMetricOptunaSearch(
            metric=s.metric, mode=s.mode, sampler=sampler, study_name=study_name, storage=storage
        )
    return None


def search_alg(spec: SweepSpec, study_storage: Path | None, study_name: str) -> Any:
    found = searcher(spec, study_storage, study_name)
    if found is not None:
        return found
    # Grid and random both go through Tune's variant generator: the seed fixes random draws,
    # and it limits concurrency itself (TuneConfig.max_concurrent_trials only wraps Searchers).
    return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=spec.max_concurrent)


def scheduler(spec: SweepSpec) -> Any:
    sched = spec.scheduler
    if sched.name != "asha":
        return None
    epochs = int(spec.base.get("train", {}).get("epochs", 10))
    for axis in spec.space:
        if axis.key == "train.epochs":
            epochs = int(max(axis.values or (axis.high,)))
    # time_attr "epoch" with max_t one past the last epoch: ASHA may stop a trial at a rung but
    # never kills it at its last epoch, before the final probes are reported.
    return ASHAScheduler(
        time_attr=M.EPOCH,
        metric=sched.metric,
        mode=sched.mode,
        max_t=epochs + 1,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
    )


def trainable(spec: SweepSpec) -> Any:
    fn = tune.with_parameters(spec.info.fn, checkpoint_every=spec.checkpoint_every)
    return tune.with_resources(fn, spec.resources.as_tune())


def trial_dirname(trial: Any) -> str:
    # Short, stable directory names: Tune's default embeds the whole config and can exceed
    # path limits with nested configs.
    return f"{trial.trainable_name}_{trial.trial_id}"


def tune_config(spec: SweepSpec, study_storage: Path | None, study_name: str) -> tune.TuneConfig:
    return tune.TuneConfig(
        search_alg=search_alg(spec, study_storage, study_name),
        scheduler=scheduler(spec),
        num_samples=spec.search.num_samples,
        max_concurrent_trials=(spec.max_concurrent or None)
        if spec.search.algorithm == "optuna"
        else None,
        trial_dirname_creator=trial_dirname,
        reuse_actors=True,  # a fresh worker process costs ~10 s of imports per trial
    )
