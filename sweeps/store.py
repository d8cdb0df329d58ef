"""Reading sweeps back from the tracking store without importing MLflow, and without writing.

`list` and `status` must start in well under 2.5 s and must never create or migrate a store:
MLflow's client takes seconds to import and its SQLite store creates (or upgrades) the database
on open. So the two stores headsweep sets up itself are read directly: a local SQLite store
through a read-only connection (MLflow's tables `experiments`, `runs`, `tags`,
`latest_metrics`), an MLflow server through its REST API (`runs/search`). Any other store URI
(postgresql://, databricks, ...) goes through MLflow's client. Sweep names reach SQL only as
bound parameters and REST filters only through `sweeps.names.tag_equals`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sweeps.locations import Locations, SweepError
from sweeps.names import tag_equals

# The tags sweeps.tracking writes (repeated: importing that module loads MLflow).
ROLE, SWEEP, PARENT = "headsweep.role", "headsweep.sweep", "mlflow.parentRunId"
REST_TIMEOUT_S = 10.0


@dataclass
class RunRow:
    """The parts of an MLflow run that `list` and `status` show."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    start_time: int  # ms since the epoch
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class StoreReader(Protocol):
    def parents(self, name: str | None = None) -> list[RunRow]: ...

    def children(self, parent: RunRow) -> list[RunRow]: ...

    def experiment_name(self, experiment_id: str) -> str: ...


def reader(loc: Locations) -> StoreReader | None:
    """The reader of `loc`'s tracking store; None when a local store does not exist yet."""
    store = loc.local_store
    if store is not None:
        return SqliteReader(store) if store.is_file() else None
    if loc.tracking_uri.startswith(("http://", "https://")):
        return RestReader(loc.tracking_uri)
    return MlflowReader(loc)


# --------------------------------------------------------------------------- SQLite


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:  # mode=ro: never creates, migrates or locks the database for writing
            self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
            self.db.execute("SELECT 1 FROM runs LIMIT 1")
        except sqlite3.Error as exc:
            raise SweepError(f"tracking store {path}: cannot read it ({exc})") from None

    def _runs(self, where: str, params: tuple[Any, ...]) -> list[RunRow]:
        query = (
            "SELECT r.run_uuid, r.name, r.experiment_id, r.status, r.start_time, r.end_time "
            "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' AND "
            f"{where} ORDER BY r.start_time DESC"
        )
        try:
            rows = {
                r[0]: RunRow(r[0], r[1] or "", str(r[2]), r[3], r[4] or 0, r[5])
                for r in self.db.execute(query, params)
            }
            for ids in _chunks(list(rows)):
                marks = ",".join("?" * len(ids))
                for run_id, key, value in self.db.execute(
                    f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", ids
                ):
                    rows[run_id].tags[key] = value
                for run_id, key, value, is_nan in self.db.execute(
                    "SELECT run_uuid, key, value, is_nan FROM latest_metrics "
                    f"WHERE run_uuid IN ({marks})",
                    ids,
                ):
                    rows[run_id].metrics[key] = math.nan if is_nan else float(value)
        except sqlite3.Error as exc:
            raise SweepError(f"tracking store {self.path}: cannot read it ({exc})") from None
        return list(rows.values())

    def parents(self, name: str | None = None) -> list[RunRow]:
        where = "r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = 'parent')"
        params: tuple[Any, ...] = (ROLE,)
        if name is not None:
            where += " AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
            params += (SWEEP, name)
        return self._runs(where, params)

    def children(self, parent: RunRow) -> list[RunRow]:
        where = (
            "r.experiment_id = ? AND r.run_uuid IN "
            "(SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
        )
        return self._runs(where, (parent.experiment_id, PARENT, parent.run_id))

    def experiment_name(self, experiment_id: str) -> str:
        found = self.db.execute(
            "SELECT name FROM experiments WHERE experiment_id = ?", (experiment_id,)
        ).fetchone()
        return str(found[0]) if found else experiment_id


# --------------------------------------------------------------------------- MLflow server


def _auth_header() -> dict[str, str]:
    """MLflow's own client credentials ($MLFLOW_TRACKING_TOKEN, or USERNAME and PASSWORD)."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


class RestReader:
    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")

    def _post(self, endpoint: str, body: dict[str, Any], get: bool = False) -> dict[str, Any]:
        url = f"{self.uri}/api/2.0/mlflow/{endpoint}"
        if get:  # MLflow's read endpoints take GET with the fields as a query
            url += "?" + urllib.parse.urlencode(body)
        request = urllib.request.Request(
            url,
            data=None if get else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **_auth_header()},
        )
        try:
            with urllib.request.urlopen(request, timeout=REST_TIMEOUT_S) as reply:
                answer: dict[str, Any] = json.loads(reply.read() or b"{}")
                return answer
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200].replace("\n", " ")
            raise SweepError(
                f"MLflow server {self.uri}: {endpoint} answered {exc.code} {detail}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SweepError(f"MLflow server {self.uri}: {endpoint} failed ({exc})") from None

    def _experiment_ids(self) -> list[str]:
        ids, token = [], None
        while True:
            body: dict[str, Any] = {"max_results": 1000, **({"page_token": token} if token else {})}
            answer = self._post("experiments/search", body)
            ids += [e["experiment_id"] for e in answer.get("experiments", [])]
            token = answer.get("next_page_token")
            if not token:
                return ids

    def _search(self, ids: list[str], filter_string: str) -> list[RunRow]:
        rows, token = [], None
        while ids:
            body: dict[str, Any] = {
                "experiment_ids": ids,
                "filter": filter_string,
                "max_results": 1000,
                "order_by": ["attributes.start_time DESC"],
                **({"page_token": token} if token else {}),
            }
            answer = self._post("runs/search", body)
            for run in answer.get("runs", []):
                info, data = run["info"], run.get("data", {})
                rows.append(
                    RunRow(
                        info["run_id"],
                        info.get("run_name", ""),
                        info["experiment_id"],
                        info.get("status", ""),
                        int(info.get("start_time", 0)),
                        int(info["end_time"]) if info.get("end_time") else None,
                        {t["key"]: t.get("value", "") for t in data.get("tags", [])},
                        {m["key"]: float(m["value"]) for m in data.get("metrics", [])},
                    )
                )
            token = answer.get("next_page_token")
            if not token:
                break
        return rows

    def parents(self, name: str | None = None) -> list[RunRow]:
        clause = tag_equals(ROLE, "parent")
        if name is not None:
            clause += " and " + tag_equals(SWEEP, name)
        return self._search(self._experiment_ids(), clause)

    def children(self, parent: RunRow) -> list[RunRow]:
        return self._search([parent.experiment_id], tag_equals(PARENT, parent.run_id))

    def experiment_name(self, experiment_id: str) -> str:
        answer = self._post("experiments/get", {"experiment_id": experiment_id}, get=True)
        return str(answer.get("experiment", {}).get("name", experiment_id))


# --------------------------------------------------------------------------- other stores


class MlflowReader:
    """Stores headsweep does not read itself (postgresql://, databricks, ...): MLflow's client."""

    def __init__(self, loc: Locations) -> None:
        self.client = loc.tracker().client

    def _search(self, ids: list[str], filter_string: str) -> list[RunRow]:
        runs = self.client.search_runs(
            ids, filter_string, order_by=["attributes.start_time DESC"], max_results=50_000
        )
        return [
            RunRow(
                r.info.run_id,
                r.info.run_name or "",
                r.info.experiment_id,
                r.info.status,
                r.info.start_time or 0,
                r.info.end_time,
                dict(r.data.tags),
                dict(r.data.metrics),
            )
            for r in runs
        ]

    def parents(self, name: str | None = None) -> list[RunRow]:
        ids = [e.experiment_id for e in self.client.search_experiments()]
        clause = tag_equals(ROLE, "parent")
        if name is not None:
            clause += " and " + tag_equals(SWEEP, name)
        return self._search(ids, clause) if ids else []

    def children(self, parent: RunRow) -> list[RunRow]:
        return self._search([parent.experiment_id], tag_equals(PARENT, parent.run_id))

    def experiment_name(self, experiment_id: str) -> str:
        return str(self.client.get_experiment(experiment_id).name)
