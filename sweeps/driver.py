"""The life of a sweep: check everything, start Ray, open the MLflow parent run, run the Tuner,
record the outcome; resume an interrupted sweep; read a sweep's state without Ray.

Where things live (the embedded defaults, all under --root, default ./runs):
    mlflow.db            MLflow tracking store (SQLite)      --tracking-uri / $MLFLOW_TRACKING_URI
    mlartifacts/<exp>/   MLflow artifacts
    ray/<sweep>/         Tune experiment: trial dirs, results, checkpoints   --storage
    optuna/<sweep>.db    Optuna study (search.algorithm: optuna)
    tables/<sweep>/      analysis tables and figures
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.spec import SpecError, SweepSpec, parse_spec
from sweeps.tracking import MLflowTrialLogger, Tracker, check_reachable, default_tracking_uri
from trainables import TRAINABLES

log = logging.getLogger(__name__)
SNAPSHOT_PERIOD_S = 10  # Tune's own minimum in its 'auto' mode

# Tune's console output is replaced by sweeps.progress; these keep the terminal readable.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Searchers may watch a metric only the final report has (the frozen probes).
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Experiment snapshots (what `headsweep resume` restores) at a fixed period, so the checkpoint
# pruner's grace period (sweeps/checkpoints.py) provably spans several of them.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(SNAPSHOT_PERIOD_S))

TERMINAL = ("TERMINATED", "ERROR")


class SweepError(RuntimeError):
    """A sweep that cannot start or continue; the message is one actionable line."""


@dataclass(frozen=True)
class Locations:
    root: Path
    tracking_uri: str
    storage: str  # Tune's storage_path: a local directory or a URI (s3://, gs://, ...)

    @classmethod
    def make(
        cls, root: str | Path = "runs", tracking_uri: str | None = None, storage: str | None = None
    ) -> Locations:
        root = Path(root).resolve()
        return cls(root, default_tracking_uri(root, tracking_uri), storage or str(root / "ray"))

    def tables(self, sweep: str) -> Path:
        return self.root / "tables" / sweep

    def study(self, sweep: str) -> Path:
        return self.root / "optuna" / f"{sweep}.db"

    def experiment_path(self, sweep: str) -> str:
        return f"{self.storage.rstrip('/')}/{sweep}"

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.root / "mlartifacts")


@dataclass
class Outcome:
    name: str
    experiment_path: str
    parent_run_id: str
    counts: dict[str, int] = field(default_factory=dict)  # Tune status -> trials
    total: int = 0
    metric: str = ""  # what progress and the final table focus on

    @property
    def interrupted(self) -> bool:
        return sum(self.counts.get(s, 0) for s in TERMINAL) < self.total

    @property
    def failed(self) -> int:
        return self.counts.get("ERROR", 0)


# --------------------------------------------------------------------------- resources


def local_capacity() -> dict[str, float]:
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_fits(spec: SweepSpec, nodes: list[dict[str, float]]) -> None:
    """A trial runs on one node: refuse a request no node can ever satisfy."""
    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu, **dict(spec.resources.custom)}
    need = {k: v for k, v in need.items() if v > 0}
    if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
        return
    for key, amount in need.items():
        most = max((node.get(key, 0) for node in nodes), default=0)
        if most < amount:
            spec_key = {"CPU": "resources.cpu", "GPU": "resources.gpu"}.get(
                key, f"resources.custom.{key}"
            )
            raise SpecError(
                f"{spec_key}: each trial asks for {amount:g} {key} but the largest "
                f"node has {most:g}; no trial could ever start"
            )
    raise SpecError(f"resources: no single node has {need} together")


def start_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    common = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(include_dashboard=False, object_store_memory=200 * 1024**2, **common)


def cluster_nodes() -> list[dict[str, float]]:
    import ray

    from sweeps.cluster import launchable_node_types

    # Node types the autoscaler can still add count too: GPU workers scaled to zero can run.
    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return alive + [t.resources for t in launchable_node_types()]


def nodes_for(address: str | None) -> list[dict[str, float]]:
    import ray

    if address or ray.is_initialized():
        start_ray(address)
        return cluster_nodes()
    return [local_capacity()]


# --------------------------------------------------------------------------- run and resume


def _tune_statuses(experiment_path: str) -> dict[str, int]:
    from ray.tune import ExperimentAnalysis

    counts: dict[str, int] = {}
    for trial in ExperimentAnalysis(experiment_path).trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    return counts


def _finish(tracker: Tracker, outcome: Outcome) -> Outcome:
    outcome.counts = _tune_statuses(outcome.experiment_path)
    outcome.total = max(outcome.total, sum(outcome.counts.values()))
    state = "interrupted" if outcome.interrupted else "failed" if outcome.failed else "finished"
    client = tracker.client
    client.set_tag(outcome.parent_run_id, "headsweep.state", state)
    client.set_tag(outcome.parent_run_id, "headsweep.counts", json.dumps(outcome.counts))
    status = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}[state]
    client.set_terminated(outcome.parent_run_id, status)
    return outcome


def _snapshot_period() -> float:
    """Seconds between experiment snapshots (a user's adaptive 'auto' is taken as 30 s)."""
    try:
        return float(os.environ["TUNE_GLOBAL_CHECKPOINT_S"])
    except ValueError:
        return 30.0


def _callbacks(
    spec: SweepSpec,
    name: str,
    tracker: Tracker,
    experiment_id: str,
    parent_run_id: str,
    quiet: bool,
) -> list:
    from sweeps.checkpoints import CheckpointPruner
    from sweeps.progress import Progress

    # checkpoints are pruned by CheckpointPruner, not Tune's num_to_keep (see sweeps/checkpoints.py)
    callbacks: list = [
        MLflowTrialLogger(tracker.uri, experiment_id, parent_run_id, name),
        CheckpointPruner(grace_s=10 * _snapshot_period()),
    ]
    if not quiet:
        callbacks.append(
            Progress(
                spec.num_trials(),
                _metric(spec),
                spec.search.mode,
                [a.key for a in spec.space if a.key != "train.seed"],
            )
        )
    return callbacks


def _metric(spec: SweepSpec) -> str:
    """The metric progress and the final table focus on: the search's, else the pre probe of the
    data's last target (the synthetic fit's slope for the theory runs)."""
    if spec.search.metric:
        return spec.search.metric
    if spec.trainable == "synthetic":
        return "synthetic/slope"
    from headsweep.config import TrialConfig
    from headsweep.data import targets_of

    return f"probe/{targets_of(TrialConfig.from_dict(spec.base).data)[-1]}/pre"


def run(
    spec: SweepSpec, name: str, loc: Locations, address: str | None = None, quiet: bool = False
) -> Outcome:
    """Start a new sweep. Everything that can be checked is checked before Ray, MLflow or Tune
    write anything."""
    from ray import tune

    from sweeps import tuner as T

    check_fits(spec, nodes_for(address))
    check_reachable(loc.tracking_uri)
    check_storage(loc.storage, address)  # after the cheap checks: it runs a task on every node
    path = loc.experiment_path(name)
    if "://" not in path and Path(path).exists():
        raise SweepError(f"{path} already exists; pick another --name or remove it")
    tracker = loc.tracker()  # creates the SQLite store on first use: only after the checks
    if tracker.find_sweep(name) is not None:
        raise SweepError(
            f"a sweep named {name!r} already exists; continue it with "
            f"`headsweep resume {name}` or pick another --name"
        )
    start_ray(address)
    experiment_id = tracker.experiment_id(spec.name)
    parent = tracker.start_parent(
        spec.name,
        name,
        tags={
            "headsweep.storage": loc.storage,
            "headsweep.trainable": spec.trainable,
            "headsweep.spec_hash": spec.digest(),
            "headsweep.num_trials": str(spec.num_trials()),
            "headsweep.metric": _metric(spec),
            "headsweep.mode": spec.search.mode,
            "headsweep.state": "running",
            "headsweep.root": str(loc.root),
            "mlflow.note.content": spec.description,
        },
        params={
            "search.algorithm": spec.search.algorithm,
            "trainable": spec.trainable,
            "num_trials": spec.num_trials(),
            **{f"space.{a.key}": a.describe() for a in spec.space},
        },
        files={
            "sweep/spec.yaml": yaml.safe_dump(spec.source, sort_keys=False),
            "sweep/spec.json": json.dumps(spec.source),
            # the base trial config with every default filled in: what "unset" meant
            "sweep/base_resolved.json": json.dumps(
                TRAINABLES[spec.trainable].validate(spec.base).to_dict(), indent=1
            ),
        },
    )
    tuner = tune.Tuner(
        T.trainable(spec),
        param_space=T.param_space(spec),
        tune_config=T.tune_config(spec, loc.study(name), name),
        run_config=tune.RunConfig(
            name=name,
            storage_path=loc.storage,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=_callbacks(spec, name, tracker, experiment_id, parent, quiet),
            verbose=0,
        ),
    )
    outcome = Outcome(
        name,
        path,
        parent,
        total=spec.num_trials(),
        metric=_metric(spec),
    )
    try:
        tuner.fit()
    finally:
        _finish(tracker, outcome)
    return outcome


def stored_spec(tracker: Tracker, parent: Any) -> SweepSpec:
    local = tracker.client.download_artifacts(parent.info.run_id, "sweep/spec.json")
    return parse_spec(json.loads(Path(local).read_text()))


def resume(name: str, loc: Locations, address: str | None = None) -> Outcome:
    """Continue an interrupted sweep: finished trials stay finished, interrupted ones continue
    from their last checkpoint, errored ones are retried from theirs."""
    from ray import tune

    from sweeps import tuner as T

    check_reachable(loc.tracking_uri)
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    if parent is None:
        raise SweepError(f"no sweep named {name!r} in {loc.tracking_uri} (see `headsweep list`)")
    spec = stored_spec(tracker, parent)
    path = f"{parent.data.tags['headsweep.storage'].rstrip('/')}/{name}"
    if not tune.Tuner.can_restore(path):
        raise SweepError(f"no Tune experiment to resume at {path}")
    start_ray(address)
    tracker.client.update_run(parent.info.run_id, status="RUNNING")
    tracker.client.set_tag(parent.info.run_id, "headsweep.state", "running")
    tuner = tune.Tuner.restore(
        path, trainable=T.trainable(spec), resume_unfinished=True, resume_errored=True
    )
    outcome = Outcome(
        name,
        path,
        parent.info.run_id,
        total=spec.num_trials(),
        metric=_metric(spec),
    )
    try:
        tuner.fit()
    finally:
        _finish(tracker, outcome)
    return outcome


def check_storage(storage: str, address: str | None) -> None:
    """On a multi-node cluster every node writes its trials' results and checkpoints under
    --storage and the driver reads them back: refuse, before any trial starts, a path that some
    node cannot see. URIs (s3://, gs://, ...) pass. A local path is checked for real on every
    alive node (a marker file the driver writes, looked for by a task pinned to each node); for
    the nodes the autoscaler may still add it must be a network filesystem."""
    import ray

    from sweeps import cluster

    if "://" in storage and not storage.startswith("file://"):
        return
    if not address and not ray.is_initialized():
        return  # Ray will start here, on this machine alone
    path = Path(storage.removeprefix("file://")).expanduser().resolve()
    try:
        blind, alive = cluster.nodes_not_seeing(path)
    except OSError as exc:
        raise SweepError(f"--storage {path}: cannot write there ({exc.strerror or exc})") from None
    if blind:
        raise SweepError(
            f"--storage {path} is a node-local path: {len(blind)} of {alive} nodes cannot see "
            f"what the driver writes there ({'; '.join(blind)}); {cluster.STORAGE_ADVICE}"
        )
    later = cluster.launchable_node_types()
    if (
        later
        and not cluster.is_network_filesystem(path)
        and not os.environ.get("HEADSWEEP_SHARED_FS")
    ):
        kinds = ", ".join(f"{t.name} x{t.max_workers}" for t in later)
        raise SweepError(
            f"--storage {path} is on this node's own disk "
            f"({cluster.filesystem_type(path) or 'local'}) and the autoscaler may add nodes "
            f"({kinds}) that would not see it; {cluster.STORAGE_ADVICE} (if it is mounted on "
            "every node the autoscaler adds, set HEADSWEEP_SHARED_FS=1)"
        )


# --------------------------------------------------------------------------- reading back


def sweep_status(name: str, loc: Locations) -> dict[str, Any]:
    """A sweep's state from the tracking store alone (no Ray): counts, best metric, duration."""
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    if parent is None:
        raise SweepError(f"no sweep named {name!r} in {loc.tracking_uri} (see `headsweep list`)")
    tags = parent.data.tags
    children = tracker.children(parent)
    counts: dict[str, int] = {}
    for child in children:
        counts[child.info.status] = counts.get(child.info.status, 0) + 1
    metric, mode = tags.get("headsweep.metric", ""), tags.get("headsweep.mode", "max")
    scored = [c for c in children if metric in c.data.metrics]
    best = None
    if scored:
        pick = max if mode == "max" else min
        top = pick(scored, key=lambda c: c.data.metrics[metric])
        partner = metric.rsplit("/", 1)[0] + "/post" if metric.endswith("/pre") else ""
        best = {
            "run": top.info.run_name,
            "metric": metric,
            "value": top.data.metrics[metric],
            "post": top.data.metrics.get(partner),
        }
    end = parent.info.end_time or int(time.time() * 1000)
    return {
        "name": name,
        "experiment": tracker.client.get_experiment(parent.info.experiment_id).name,
        "state": tags.get("headsweep.state", parent.info.status.lower()),
        "trials": int(tags.get("headsweep.num_trials", len(children))),
        "runs": counts,
        "best": best,
        "duration_s": (end - parent.info.start_time) / 1000,
        "parent_run_id": parent.info.run_id,
        "storage": tags.get("headsweep.storage", ""),
    }


def list_sweeps(loc: Locations) -> list[dict[str, Any]]:
    tracker = loc.tracker()
    rows = []
    for parent in tracker.sweeps():
        tags = parent.data.tags
        rows.append(
            {
                "name": tags.get("headsweep.sweep", parent.info.run_name),
                "state": tags.get("headsweep.state", parent.info.status.lower()),
                "trials": tags.get("headsweep.num_trials", "?"),
                "started": time.strftime(
                    "%Y-%m-%d %H:%M", time.localtime(parent.info.start_time / 1000)
                ),
            }
        )
    return rows
