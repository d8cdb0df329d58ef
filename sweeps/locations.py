"""Where a sweep's things live, under --root (default ./runs) unless told otherwise:

mlflow.db            MLflow tracking store (SQLite)      --tracking-uri / $MLFLOW_TRACKING_URI
mlartifacts/<exp>/   MLflow artifacts
ray/<sweep>/         Tune experiment: trial dirs, results, checkpoints   --storage
optuna/<sweep>.db    Optuna study (search.algorithm: optuna)
tables/<sweep>/      analysis tables and figures

Every path built from a sweep name is checked to stay inside the root or the storage, and the
root and a local storage are probed (a directory, writable) before a command writes anything.
This module imports neither MLflow nor torch: `list` and `status` start fast.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.names import check_name

if TYPE_CHECKING:  # types only: sweeps.tracking imports MLflow (seconds), loaded on use
    from sweeps.tracking import Tracker

HEALTH_TIMEOUT_S = 5.0  # the longest any command waits for an MLflow server to answer
# MLflow's client retries a failing request 7 times with exponential backoff (minutes). A driver
# rides out a server blip that way; a command a user waits on (list, status, analyze, compare,
# ui) gives up within ~15 s of a server that answered /health and then stopped answering.
QUICK_CLIENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
# Schemes MLflow's tracking client accepts; anything else is a typo, refused up front.
TRACKING_SCHEMES: tuple[str, ...] = (
    "sqlite",
    "http",
    "https",
    "file",
    "postgresql",
    "mysql",
    "mssql",
)
TRACKING_SCHEMES += ("databricks", "databricks-uc", "uc")


class SweepError(RuntimeError):
    """A sweep that cannot start, continue or be read; the message is one actionable line."""


def default_tracking_uri(root: Path, explicit: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else SQLite under the root (never ./mlruns).
    The same rule as sweeps.tracking.default_tracking_uri, here so that resolving locations
    does not import MLflow."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def experiment_in(storage: str, sweep: str) -> str:
    """The Tune experiment of `sweep` in `storage` (a directory or a URI; the parent run's
    `headsweep.storage` tag names it)."""
    return f"{storage.rstrip('/')}/{sweep}"


def inside(base: str | Path, path: str | Path, what: str) -> str:
    """`path` as a string, or a SweepError when it leaves `base` (a directory or a URI)."""
    base_text, path_text = str(base), str(path)
    if "://" in base_text:  # s3://bucket/x: compare the normalised key paths
        scheme, _, rest = base_text.partition("://")
        other_scheme, _, other_rest = path_text.partition("://")
        ok = scheme == other_scheme and (posixpath.normpath("/" + other_rest) + "/").startswith(
            posixpath.normpath("/" + rest).rstrip("/") + "/"
        )
        ok = ok and ".." not in other_rest.split("/")
    else:
        ok = Path(path_text).resolve().is_relative_to(Path(base_text).resolve())
    if not ok:
        raise SweepError(f"{what} {path_text} would lie outside {base_text}")
    return path_text


def _probe_directory(path: Path, option: str) -> None:
    """A SweepError unless `path` is (or can be created as) a writable directory. Nothing is
    left behind: the probe file is anonymous and the directory is not created."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise SweepError(f"{option} {path}: {existing} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SweepError(f"{option} {path}: cannot write in {existing} ({reason})") from None


# Ray gives a submitted job's entrypoint its job config (with the submission id) in this variable.
RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def ray_job_id() -> str | None:
    """The submission id (`raysubmit_...`) when this process is a `ray job submit` entrypoint."""
    try:
        metadata = json.loads(os.environ.get(RAY_JOB_CONFIG) or "{}").get("metadata") or {}
        found = metadata.get("job_submission_id")
    except (ValueError, AttributeError):  # not JSON, or not the mapping Ray writes
        return None
    return str(found) if found else None


def quick_mlflow_client() -> None:
    """Bound MLflow's retries for this process (`QUICK_CLIENT`); a user's own settings win."""
    for key, value in QUICK_CLIENT.items():
        os.environ.setdefault(key, value)


def check_tracking_uri(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """A SweepError naming the URI when it has an unknown scheme or its server does not answer
    /health within `timeout` seconds (every command probes before it asks MLflow anything:
    MLflow's own client retries for minutes)."""
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise SweepError(
            f"tracking URI {uri!r}: unsupported scheme {scheme!r} (use sqlite:///PATH, "
            "http(s)://HOST:PORT or another MLflow store URI)"
        )
    if scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            if reply.status == 200:
                return
            problem = f"/health answered {reply.status}"
    except urllib.error.HTTPError as exc:
        problem = f"/health answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        problem = f"not reachable ({reason}; waited at most {timeout:g} s)"
    raise SweepError(
        f"MLflow tracking server {uri}: {problem}; start it or pass another --tracking-uri"
    )


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
        if root.exists() and not root.is_dir():
            raise SweepError(f"--root {root}: is a file, not a directory")
        if storage and "://" not in storage:
            storage = str(Path(storage).resolve())
            if Path(storage).exists() and not Path(storage).is_dir():
                raise SweepError(f"--storage {storage}: is a file, not a directory")
        return cls(root, default_tracking_uri(root, tracking_uri), storage or str(root / "ray"))

    @property
    def local_store(self) -> Path | None:
        """The SQLite file of a local tracking store, else None."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        return Path(self.tracking_uri.removeprefix("sqlite:///").split("?")[0])

    def check_writable(self) -> None:
        """Before a command writes: the root and a local storage are writable directories."""
        _probe_directory(self.root, "--root")
        if "://" not in self.storage:
            _probe_directory(Path(self.storage), "--storage")

    def tables(self, sweep: str) -> Path:
        base = self.root / "tables"
        return Path(inside(base, base / check_name(sweep, "sweep name"), "tables of"))

    def study(self, sweep: str) -> Path:
        base = self.root / "optuna"
        return Path(inside(base, base / f"{check_name(sweep, 'sweep name')}.db", "study"))

    def experiment_path(self, sweep: str) -> str:
        path = experiment_in(self.storage, check_name(sweep, "sweep name"))
        return inside(self.storage, path, "Tune experiment")

    def job_temporary(self) -> list[str]:
        """Inside a Ray job: the places (root, a local tracking store or storage) that lie in
        the job's working directory, a copy Ray deletes when the job ends; [] elsewhere."""
        if ray_job_id() is None:
            return []
        cwd = Path.cwd().resolve()
        places = {"--root": self.root, "--storage": Path(self.storage)}
        if self.local_store is not None:
            places["the tracking store"] = self.local_store
        return [
            f"{what} {path}"
            for what, path in places.items()
            if "://" not in str(path) and path.resolve().is_relative_to(cwd)
        ]

    def tracker(self) -> Tracker:
        from sweeps.tracking import Tracker  # MLflow: loaded by the commands that write to it

        return Tracker(self.tracking_uri, self.root / "mlartifacts")
