"""The life of a sweep: check everything, take the sweep's lock, start Ray (MLflow's store
opens on a thread meanwhile), open the MLflow parent run, run the Tuner, record the outcome and
the phase times (`sweeps.phases`); resume an interrupted sweep. How a driver ends
(exceptions, signals, heartbeats) is `sweeps.lifecycle`; one driver per sweep is `sweeps.lock`.
Reading a sweep back (status, list, analyze, compare) is `sweeps.results`; where things live is
`sweeps.locations`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
import torch
import yaml
from mlflow.entities import Run, RunTag
from ray import tune

from sweeps import cluster
from sweeps import tuner as T
from sweeps.atomic_fs import storage_filesystem
from sweeps.checkpoints import CheckpointPruner, restore_missing
from sweeps.lifecycle import (
    Outcome,
    check_data_roots,
    check_writable,
    driving,
    has_experiment,
    reopen,
)
from sweeps.locations import Locations, SweepError, check_tracking_uri, experiment_in, ray_job_id
from sweeps.lock import SweepLock, command_line
from sweeps.phases import SweepClock, process_start_time
from sweeps.progress import Progress
from sweeps.spec import SpecError, SweepSpec, parse_spec
from sweeps.tracking import Tracker
from sweeps.trial_logger import MLflowTrialLogger

log = logging.getLogger(__name__)
SNAPSHOT_PERIOD_S = 10  # Tune's own minimum in its 'auto' mode
_state = {"ray_started": False, "sweeps": 0}  # this process: started Ray; sweeps driven


def tune_environment() -> None:
    """The environment Tune reads while a sweep runs (set by run and resume, never on import;
    a user's own settings win)."""
    # Tune's console output is replaced by sweeps.progress; these keep the terminal readable.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Searchers may watch a metric only the final report has (the frozen probes).
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Experiment snapshots (what `headsweep resume` restores) at a fixed period, so the
    # checkpoint pruner's grace period (sweeps/checkpoints.py) provably spans several of them.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(SNAPSHOT_PERIOD_S))


# --------------------------------------------------------------------------- resources


def local_capacity() -> dict[str, float]:
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
    if ray.is_initialized():
        return
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(include_dashboard=False, object_store_memory=200 * 1024**2, **common)
    _state["ray_started"] = True


def stop_ray_in_background() -> threading.Thread | None:
    """`ray.shutdown()` in a thread, when this process started Ray (or joined a cluster): for a
    command about to exit (`headsweep run`, `resume`), whose analysis needs no Ray. Ray's own
    exit hook would otherwise run after the analysis, stopping Ray's processes one after the
    other (a second each, 1.4 s measured); here that wait overlaps the analysis. Join the thread
    before exiting."""
    if not _state["ray_started"] or not ray.is_initialized():
        return None
    _state["ray_started"] = False
    from ray.dag import compiled_dag_node  # noqa: F401 - shutdown's import, on this thread

    thread = threading.Thread(target=ray.shutdown, name="headsweep-ray-shutdown", daemon=True)
    thread.start()
    return thread


def cluster_nodes() -> list[dict[str, float]]:
    # Node types the autoscaler can still add count too: GPU workers scaled to zero can run.
    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return alive + [t.resources for t in cluster.launchable_node_types()]


def nodes_for(address: str | None) -> list[dict[str, float]]:
    if address or ray.is_initialized():
        start_ray(address)
        return cluster_nodes()
    return [local_capacity()]


# --------------------------------------------------------------------------- run and resume


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
    clock: SweepClock | None = None,
) -> list[tune.Callback]:
    # checkpoints are pruned by CheckpointPruner, not Tune's num_to_keep (see sweeps/checkpoints.py)
    callbacks: list[tune.Callback] = [
        *([clock] if clock is not None else []),
        MLflowTrialLogger(
            tracker.uri,
            experiment_id,
            parent_run_id,
            name,
            spec.trainable,
            axes=tuple(a.key for a in spec.space),
        ),
        CheckpointPruner(grace_s=10 * _snapshot_period()),
    ]
    if not quiet:
        callbacks.append(
            Progress(
                spec.num_trials(),
                spec.default_metric(),
                spec.search.mode,
                [a.key for a in spec.space if a.key != "train.seed"],
            )
        )
    return callbacks


def run(
    spec: SweepSpec, name: str, loc: Locations, address: str | None = None, quiet: bool = False
) -> Outcome:
    """Start a new sweep. Everything that can be checked is checked before Ray, MLflow or Tune
    write anything; from the parent run's creation on, however the driver ends, the parent run
    ends with it (`sweeps.lifecycle`)."""
    run_start, since = time.time(), _process_start()
    tune_environment()
    check_fits(spec, nodes_for(address))
    check_tracking_uri(loc.tracking_uri)
    check_writable(loc)
    check_data_roots(spec)
    check_storage(loc.storage, address)  # after the cheap checks: it runs a task on every node
    path = loc.experiment_path(name)
    # The lock first: a second driver of the same name is refused naming the first. A dead
    # driver's lock is taken over only if it left nothing else (it died before Tune started).
    lock = SweepLock(path, name, command_line())
    with lock.acquire(takeover=not has_experiment(path)):
        if has_experiment(path):
            raise SweepError(f"{path} already exists; pick another --name or remove it")
        if _named_in_local_store(name, loc):  # before Ray starts (a read-only look)
            raise _name_taken(name)
        # MLflow's store (created and migrated on first use: seconds) and the name check on
        # a thread while Ray starts here; the parent run only once both have succeeded.
        with ThreadPoolExecutor(1, thread_name_prefix="headsweep-mlflow") as pool:
            opening = pool.submit(_open_tracker, name, loc)
            try:
                start_ray(address)
            except Exception:
                problem = opening.exception()
                if isinstance(problem, SweepError):  # the name, refused first as it always was
                    raise problem from None
                raise
            tracker = opening.result()
        experiment_id = tracker.experiment_id(spec.name)
        tracker.mark_model_training(experiment_id)
        parent = tracker.start_parent(
            spec.name,
            name,
            tags={
                "headsweep.storage": loc.storage,
                "headsweep.trainable": spec.trainable,
                "headsweep.spec_hash": spec.digest(),
                "headsweep.num_trials": str(spec.num_trials()),
                "headsweep.metric": spec.default_metric(),
                "headsweep.mode": spec.search.mode,
                "headsweep.state": "running",
                "headsweep.root": str(loc.root),
                **({"headsweep.ray_job": job} if (job := ray_job_id()) else {}),
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
                "sweep/base_resolved.json": json.dumps(spec.settings({}).to_dict(), indent=1),
            },
        )
        outcome = Outcome(
            name,
            path,
            parent,
            total=spec.num_trials(),
            metric=spec.default_metric(),
            experiment_id=experiment_id,
        )
        clock = SweepClock(spec.num_trials())
        with driving(tracker, outcome, lock):
            tuner = tune.Tuner(
                T.trainable(spec),
                param_space=T.param_space(spec),
                tune_config=T.tune_config(spec, loc.study(name), name),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=loc.storage,
                    storage_filesystem=storage_filesystem(loc.storage),
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    callbacks=_callbacks(spec, name, tracker, experiment_id, parent, quiet, clock),
                    verbose=0,
                ),
            )
            tuner.fit()
            _record_timing(tracker, parent, clock.tags(run_start, time.time(), since))
    return outcome


def _name_taken(name: str) -> SweepError:
    return SweepError(
        f"a sweep named {name!r} already exists; continue it with "
        f"`headsweep resume {name}` or pick another --name"
    )


def _named_in_local_store(name: str, loc: Locations) -> bool:
    """Whether a local SQLite store already holds sweep `name`, read without MLflow (ms): a
    clash is refused before Ray starts. Servers and unreadable stores are left to MLflow's
    client (`_open_tracker`), which decides either way."""
    if loc.local_store is None:
        return False
    from sweeps.store import reader  # the standard library's sqlite3 only

    try:
        store = reader(loc)
        return store is not None and bool(store.parents(name))
    except SweepError:
        return False


def _open_tracker(name: str, loc: Locations) -> Tracker:
    """The MLflow side that needs no Ray (run on a thread while Ray starts): the client, which
    creates and migrates a new SQLite store, and the refusal of a name already taken."""
    tracker = loc.tracker()  # creates the SQLite store on first use: only after the checks
    if tracker.find_sweep(name) is not None:
        raise _name_taken(name)
    return tracker


def _process_start() -> float | None:
    """This process's start time for the first sweep it drives (`headsweep run`: its fixed
    cost before the first trial counts from there); None for later ones (`reproduce`)."""
    _state["sweeps"] += 1
    return process_start_time() if _state["sweeps"] == 1 else None


def _record_timing(tracker: Tracker, run_id: str, tags: dict[str, str]) -> None:
    """The driver's phase times (`sweeps.phases`) on the parent run; never fails the sweep."""
    try:
        tracker.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    except Exception as exc:  # timings are a bonus; the sweep's own outcome is what matters
        log.warning("could not record the sweep's timings: %s", exc)


def stored_spec(tracker: Tracker, parent: Run) -> SweepSpec:
    local = tracker.client.download_artifacts(parent.info.run_id, "sweep/spec.json")
    return parse_spec(json.loads(Path(local).read_text()))


def resume(name: str, loc: Locations, address: str | None = None) -> Outcome:
    """Continue an interrupted or crashed sweep: finished trials stay finished, interrupted
    ones continue from their newest intact checkpoint, errored ones are retried from theirs.
    Refused while another driver runs the sweep; a dead driver's lock is taken over."""
    tune_environment()
    _process_start()  # a sweep driven: a later `run` in this process is not the first
    check_tracking_uri(loc.tracking_uri)
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    if parent is None:
        raise SweepError(f"no sweep named {name!r} in {loc.tracking_uri} (see `headsweep list`)")
    spec = stored_spec(tracker, parent)
    path = experiment_in(parent.data.tags["headsweep.storage"], name)
    if not tune.Tuner.can_restore(path):
        raise SweepError(f"no Tune experiment to resume at {path}")
    with SweepLock(path, name, command_line()).acquire(takeover=True) as lock:
        start_ray(address)
        restore_missing(path)
        run_id = parent.info.run_id
        reopen(tracker, run_id)
        outcome = Outcome(
            name,
            path,
            run_id,
            total=spec.num_trials(),
            metric=spec.default_metric(),
            experiment_id=parent.info.experiment_id,
        )
        with driving(tracker, outcome, lock):
            tuner = tune.Tuner.restore(
                path,
                trainable=T.trainable(spec),
                resume_unfinished=True,
                resume_errored=True,
                storage_filesystem=storage_filesystem(path),
            )
            tuner.fit()
    return outcome


def check_storage(storage: str, address: str | None) -> None:
    """On a multi-node cluster every node writes its trials' results and checkpoints under
    --storage and the driver reads them back: refuse, before any trial starts, a path that some
    node cannot see. URIs (s3://, gs://, ...) pass. A local path is checked for real on every
    alive node (a marker file the driver writes, looked for by a task pinned to each node); for
    the nodes the autoscaler may still add it must be a network filesystem."""
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


__all__ = ["Locations", "SweepError", "check_fits", "resume", "run"]
