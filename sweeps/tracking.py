"""MLflow tracking for sweeps: one experiment per spec name, one parent run per sweep, one child
run per trial (tag ``mlflow.parentRunId``).

All logging happens in the driver (a Tune callback), so only the driver needs to reach the
tracking store: a local SQLite file or an MLflow server. The parent run doubles as the sweep's
record (storage path, trainable, metric as tags), so `list`, `status` and `resume` work from any
machine that sees the same tracking store, without Ray.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient
from ray import tune

from headsweep.config import flatten
from trainables.common import resolve_variant

log = logging.getLogger(__name__)

SWEEP = "headsweep.sweep"
ROLE = "headsweep.role"
TRIAL_ID = "headsweep.trial_id"
PARENT = "mlflow.parentRunId"
ERROR = "headsweep.error"
MAX_TAG = 5000  # MLflow's tag values hold 8,000 characters; keep errors well below
MAX_PARAM = 6000


def default_tracking_uri(root: Path, explicit: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else SQLite under the root (never ./mlruns)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail early, with the address, when an MLflow server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            if reply.status == 200:
                return
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(
            f"MLflow tracking server {uri} is not reachable from this machine "
            f"({exc}); start it or pass --tracking-uri"
        ) from None
    raise ConnectionError(f"MLflow tracking server {uri} answered /health with an error")


def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
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
    return out


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Params in batches of 100 (MLflow's limit); lists and mappings as JSON."""
    items = [
        Param(k[:250], (json.dumps(v) if isinstance(v, list | dict) else str(v))[:MAX_PARAM])
        for k, v in params.items()
    ]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


class Tracker:
    """Thin layer over MlflowClient for sweep-shaped queries."""

    def __init__(self, uri: str, artifact_root: Path | None = None) -> None:
        self.uri = uri
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
        return self.client.create_experiment(name, artifact_location=location)

    def _all_experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def sweeps(self) -> list[Run]:
        ids = self._all_experiment_ids()
        if not ids:
            return []
        return list(
            self.client.search_runs(
                ids,
                f"tags.`{ROLE}` = 'parent'",
                order_by=["attributes.start_time DESC"],
                max_results=10_000,
            )
        )

    def find_sweep(self, name: str) -> Run | None:
        ids = self._all_experiment_ids()
        if not ids:
            return None
        runs = self.client.search_runs(
            ids, f"tags.`{ROLE}` = 'parent' and tags.`{SWEEP}` = '{name}'", max_results=2
        )
        return runs[0] if runs else None

    def children(self, parent: Run) -> list[Run]:
        return list(
            self.client.search_runs(
                [parent.info.experiment_id],
                f"tags.`{PARENT}` = '{parent.info.run_id}'",
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


class MLflowTrialLogger(tune.Callback):
    """Tune callback (runs in the driver): child run per trial, params = flat trial config,
    metrics per report (step = epoch), FINISHED or FAILED with the error text.

    Finds a trial's run by its trial-id tag before creating one, so a resumed sweep reuses its
    child runs. Picklable (Tune stores callbacks with the experiment for `Tuner.restore`): the
    client is created lazily and not pickled."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, sweep: str) -> None:
        self.uri, self.experiment_id, self.parent_run_id, self.sweep = (
            uri,
            experiment_id,
            parent_run_id,
            sweep,
        )
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_runs": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def run_id(self, trial: Any) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT}` = '{self.parent_run_id}' and tags.`{TRIAL_ID}` = '{trial.trial_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=str(trial),
                tags={
                    PARENT: self.parent_run_id,
                    TRIAL_ID: trial.trial_id,
                    SWEEP: self.sweep,
                    ROLE: "trial",
                },
            )
            run_id = run.info.run_id
            log_params(self.client, run_id, flatten(resolve_variant(trial.config)))
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step) for k, v in flatten(result).items() if _reportable(k, v)
        ]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(self.run_id(trial), metrics=metrics[start : start + 900])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.client.set_terminated(self.run_id(trial), "FINISHED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, "headsweep.retries", str(trial.num_failures))
        self.client.log_text(
            run_id, trial_error_text(trial), f"errors/attempt_{trial.num_failures}.txt"
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        text = trial_error_text(trial)
        self.client.set_tag(run_id, ERROR, text[-MAX_TAG:])
        self.client.log_text(run_id, text, "error.txt")
        self.client.set_terminated(run_id, "FAILED")


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


def _reportable(key: str, value: Any) -> bool:
    if key in _TUNE_BOOKKEEPING or key.startswith("config/"):
        return False
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value
        and (abs(value) != float("inf"))
    )


def trial_error_text(trial: Any) -> str:
    """The traceback Tune stored for a failed trial."""
    path = trial.error_file or ""
    try:
        if path and os.path.exists(path):
            return Path(path).read_text()
    except OSError:
        pass
    error = trial.get_error()
    return str(error) if error is not None else "trial failed (no error recorded)"
