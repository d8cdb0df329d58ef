"""MLflow tracking for sweeps: one experiment per spec name, one parent run per sweep, one child
run per trial (tag ``mlflow.parentRunId``).

All logging happens in the driver (a Tune callback, `sweeps.trial_logger`), so only the driver
needs to reach the tracking store: a local SQLite file or an MLflow server. The parent run
doubles as the sweep's record (storage path, trainable, metric as tags), so `list`, `status`,
`analyze` and `resume` work from any machine that sees the same tracking store, without Ray.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.entities import Param, Run
from mlflow.tracking import MlflowClient

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
    items = [Param(k[:250], param_text(v)) for k, v in params.items()]
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
