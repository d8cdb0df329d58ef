"""A sweep's tables one import away, for notebooks:

    from sweeps import load_sweep
    sweep = load_sweep("quickstart", root="runs")
    sweep.gaps.sort_values("gap_mean")

`load_sweep` returns every Parquet table the analysis wrote (`analysis.tables.build_tables`:
trials, probes, gaps, history, bounds, and any table added there since) as pandas DataFrames,
found in this order:

1. the root's table directory (`tables/<sweep>/*.parquet`, `sweeps.locations`);
2. else the parent run's artifacts (`analysis/tables/*.parquet`, logged by
   `sweeps.results._log_to_parent`) in the tracking store: an MLflow server
   (tracking_uri=http://HOST:PORT) or the root's SQLite store, so a laptop without the
   cluster's files still gets the tables;
3. else the analysis itself (`sweeps.results.analyze_sweep`), from the Tune experiment
   directory; it writes the tables under the root and logs them to the parent run.

`rebuild=True` skips 1 and 2. Steps 1 and 2 import neither Ray nor torch and start no process;
step 3 imports the trainables (Ray and torch) but never starts Ray either: reading a sweep
needs no cluster. A local SQLite store that does not exist is never created.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq

from sweeps.locations import Locations, SweepError, check_tracking_uri

if TYPE_CHECKING:
    from sweeps.tracking import Tracker

ARTIFACT_DIR = "analysis/tables"  # where sweeps.results logs the tables on the parent run


@dataclass(frozen=True)
class SweepTables:
    """The tables of one sweep as DataFrames: `.trials`, `.probes`, `.gaps`, `.history`,
    `.bounds`, and any other table by name (`.fewshot`, ...; `names` lists them). `settings`
    are the columns that define a setting (head and swept axes but the seed); `source` says
    where the tables were read from."""

    name: str
    source: str
    tables: Mapping[str, pd.DataFrame] = field(repr=False)
    settings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return sorted(self.tables)

    def __getattr__(self, table: str) -> pd.DataFrame:
        # Only reached for names that are not attributes: the tables, by name.
        tables = self.__dict__.get("tables", {})
        if table in tables:
            return tables[table]
        raise AttributeError(f"sweep {self.__dict__.get('name')!r} has no table {table!r}")

    # The core tables, spelled out so editors and type checkers know them.
    @property
    def trials(self) -> pd.DataFrame:
        return self.tables["trials"]

    @property
    def probes(self) -> pd.DataFrame:
        return self.tables["probes"]

    @property
    def gaps(self) -> pd.DataFrame:
        return self.tables["gaps"]

    @property
    def history(self) -> pd.DataFrame:
        return self.tables["history"]

    @property
    def bounds(self) -> pd.DataFrame:
        return self.tables["bounds"]


def read_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """Every `<name>.parquet` in `directory`, by name."""
    return {path.stem: pd.read_parquet(path) for path in sorted(directory.glob("*.parquet"))}


def _settings(directory: Path) -> list[str]:
    path = directory / "gaps.parquet"
    if not path.exists():
        return []
    meta = pq.read_schema(path).metadata or {}
    settings: list[str] = json.loads(meta.get(b"settings", b"[]"))
    return settings


def _loaded(name: str, source: str, directory: Path) -> SweepTables:
    tables = read_tables(directory)
    if "trials" not in tables:
        raise SweepError(f"{source}: no trials.parquet for sweep {name!r}")
    return SweepTables(name, source, tables, _settings(directory))


def _tracker(loc: Locations) -> Tracker | None:
    """The tracking store's client, or None for a local SQLite store that does not exist (so
    reading never creates one)."""
    store = loc.local_store
    if store is not None and not store.is_file():
        return None
    check_tracking_uri(loc.tracking_uri)  # a server that does not answer: fail in seconds
    from sweeps.tracking import Tracker  # MLflow, loaded only when the tables are not local

    return Tracker(loc.tracking_uri, loc.root / "mlartifacts")


def _from_artifacts(name: str, tracker: Tracker) -> SweepTables | None:
    """The tables logged to the sweep's parent run, or None when it has none yet."""
    parent = tracker.find_sweep(name)
    if parent is None:
        raise SweepError(f"no sweep named {name!r} in {tracker.uri} (see `headsweep list`)")
    run_id = parent.info.run_id
    listed = [a.path for a in tracker.client.list_artifacts(run_id, ARTIFACT_DIR)]
    if not any(path.endswith(".parquet") for path in listed):
        return None
    with tempfile.TemporaryDirectory(prefix="headsweep-tables-") as tmp:
        local = Path(tracker.client.download_artifacts(run_id, ARTIFACT_DIR, tmp))
        return _loaded(name, f"{tracker.uri} run {run_id}", local)


def load_sweep(
    name: str,
    root: str | Path = "runs",
    tracking_uri: str | None = None,
    *,
    rebuild: bool = False,
) -> SweepTables:
    """The tables of sweep `name` (see the module docstring for where they come from).
    `root` is the sweeps' --root, `tracking_uri` their --tracking-uri (default: the root's
    SQLite store, or $MLFLOW_TRACKING_URI). Raises SweepError, with one actionable line, when
    the sweep cannot be found."""
    loc = Locations.make(root, tracking_uri)
    directory = loc.tables(name)
    if not rebuild and (directory / "trials.parquet").is_file():
        return _loaded(name, str(directory), directory)
    tracker = _tracker(loc)
    if tracker is None:
        raise SweepError(
            f"no tables of sweep {name!r} in {directory} and no tracking store at "
            f"{loc.tracking_uri}; pass the sweep's --root or tracking_uri"
        )
    if not rebuild:
        found = _from_artifacts(name, tracker)
        if found is not None:
            return found
    # Imports the trainables (Ray, torch) to read the trials' records; starts no Ray runtime.
    from sweeps.results import analyze_sweep

    loc.check_writable()
    analyze_sweep(name, loc)
    return _loaded(name, str(directory), directory)
