"""MLflow tracking for sweeps: one experiment per spec name, one parent run per sweep, one child
run per trial (tag ``mlflow.parentRunId``).

All logging happens in the driver (a Tune callback, `sweeps.trial_logger`), so only the driver
needs to reach the tracking store: a local SQLite file or an MLflow server. The parent run
doubles as the sweep's record (storage path, trainable, metric as tags), so `list`, `status`,
`analyze` and `resume` work from any machine that sees the same tracking store, without Ray.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.entities import Param, Run
from mlflow.tracking import MlflowClient

from sweeps.names import tag_equals
from sweeps.provenance import drift, git_revision, lock_hash

log = logging.getLogger(__name__)

SWEEP = "headsweep.sweep"
ROLE = "headsweep.role"
TRIAL_ID = "headsweep.trial_id"
PARENT = "mlflow.parentRunId"
ERROR = "headsweep.error"
HEALTH = "headsweep.health"  # a finished trial's training health (headsweep.health.assess)
END_REASON = "headsweep.end_reason"  # why the driver ended the parent run (FAILED/KILLED)
# MLflow 3 opens an experiment without this tag on its GenAI traces page; with it, on the runs
# table (the value the UI's "Model training" switch writes; mlflow/server/js, workflowType).
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
MAX_TAG = 5000  # MLflow's tag values hold 8,000 characters; keep errors well below
MAX_PARAM = 6000


def default_tracking_uri(root: Path, explicit: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else SQLite under the root (never ./mlruns)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def versions() -> dict[str, str]:
    """The main packages' versions, the lock's hash and what differs from it (`sweeps.lockfile`:
    "none" when every locked package is installed at its pinned version)."""
    out = {"python": platform.python_version()}
    for pkg in (
        "headsweep",
        "torch",
        "torchvision",
        "ray",
        "mlflow",
        "optuna",
        "pandas",
        "pyarrow",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    out["lock"] = lock_hash()
    out["lock_drift"] = "; ".join(drift()) or "none"
    return out


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Params in batches of 100 (MLflow's limit); lists and mappings as JSON."""
    items = [Param(k[:250], param_text(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


class Tracker:
    """Thin layer over MlflowClient for sweep-shaped queries."""

    def __init__(self, uri: str, artifact_root: Path | None = None) -> None:
        self.uri = uri
        with store_init_lock(uri):  # MlflowClient creates (and migrates) the store right here
            self.client = MlflowClient(uri)
        # Local stores keep artifacts beside the database; a server decides for itself.
        self.artifact_root = artifact_root if is_local_store(uri) else None

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.artifact_root is not None:
            location = (Path(self.artifact_root) / name).resolve().as_uri()
        return self.client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
        )

    def mark_model_training(self, experiment_id: str) -> None:
        """Experiments created before the kind tag: give them one, never overriding a user's."""
        if EXPERIMENT_KIND not in self.client.get_experiment(experiment_id).tags:
            self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)

    def _all_experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def sweeps(self) -> list[Run]:
        ids = self._all_experiment_ids()
        if not ids:
            return []
        return list(
            self.client.search_runs(
                ids,
                tag_equals(ROLE, "parent"),
                order_by=["attributes.start_time DESC"],
                max_results=10_000,
            )
        )

    def find_sweep(self, name: str) -> Run | None:
        ids = self._all_experiment_ids()
        if not ids:
            return None
        runs = self.client.search_runs(
            ids, f"{tag_equals(ROLE, 'parent')} and {tag_equals(SWEEP, name)}", max_results=2
        )
        return runs[0] if runs else None

    def children(self, parent: Run) -> list[Run]:
        return list(
            self.client.search_runs(
                [parent.info.experiment_id],
                tag_equals(PARENT, parent.info.run_id),
                max_results=50_000,
            )
        )

    def start_parent(
        self,
        experiment: str,
        sweep: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        files: Mapping[str, str],
    ) -> str:
        run = self.client.create_run(
            self.experiment_id(experiment),
            run_name=sweep,
            tags={
                ROLE: "parent",
                SWEEP: sweep,
                "mlflow.source.git.commit": git_revision(),
                "headsweep.versions": json.dumps(versions()),
                **tags,
            },
        )
        log_params(self.client, run.info.run_id, params)
        for name, text in files.items():
            self.client.log_text(run.info.run_id, text, name)
        return run.info.run_id


def end_run(client: MlflowClient, run_id: str, status: str, reason: str = "") -> None:
    """End a run (FINISHED, FAILED, KILLED) with why, as a tag the runs table can show."""
    if reason:
        client.set_tag(run_id, END_REASON, reason[-MAX_TAG:])
    client.set_terminated(run_id, status)


@contextlib.contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the creation (and schema migration) of a SQLite store between processes:
    two commands starting at once on a fresh root otherwise both run MLflow's migrations and
    one fails ("duplicate column name"). Best effort: where no lock file can be written (a
    read-only root), MLflow's own error follows."""
    if not is_local_store(uri):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    try:
        handle = open(f"{path}.init-lock", "a")  # noqa: SIM115 - held across the yield
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ui_urls(ui: str, experiment_id: str, run_id: str = "") -> tuple[str, str]:
    """The MLflow UI's pages of a sweep: the experiment's runs table and the parent run.
    `ui` is the UI's base address (a server's tracking URI, or `headsweep ui`'s
    http://127.0.0.1:5000 for a local store)."""
    base = ui.rstrip("/")
    runs = f"{base}/#/experiments/{experiment_id}/runs"
    return runs, (f"{runs}/{run_id}" if run_id else "")


def param_text(value: Any) -> str:
    """A config value as an MLflow param: lists and mappings as JSON, anything else as str."""
    return (json.dumps(value) if isinstance(value, list | dict) else str(value))[:MAX_PARAM]


def __getattr__(name: str) -> Any:
    # Sweeps stored before the callback moved to sweeps.trial_logger pickled it under this
    # module; `headsweep resume` of such a sweep unpickles it from here (imports Ray: lazily).
    if name == "MLflowTrialLogger":
        from sweeps.trial_logger import MLflowTrialLogger  # lazily: it imports Ray

        return MLflowTrialLogger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
