"""Where a sweep's things live, under --root (default ./runs) unless told otherwise:

mlflow.db            MLflow tracking store (SQLite)      --tracking-uri / $MLFLOW_TRACKING_URI
mlartifacts/<exp>/   MLflow artifacts
ray/<sweep>/         Tune experiment: trial dirs, results, checkpoints   --storage
optuna/<sweep>.db    Optuna study (search.algorithm: optuna)
tables/<sweep>/      analysis tables and figures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeps.tracking import Tracker, default_tracking_uri


class SweepError(RuntimeError):
    """A sweep that cannot start, continue or be read; the message is one actionable line."""


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
