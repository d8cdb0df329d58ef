"""A sweep's state from the tracking store alone (no Ray, no torch, no MLflow import on the
stores headsweep creates): `headsweep status` and `headsweep list`. Read-only: an empty root
stays empty (sweeps.store reads without creating a store)."""

from __future__ import annotations

import time
from typing import Any

from headsweep import metrics as M
from sweeps.locations import Locations, SweepError, experiment_in
from sweeps.lock import driver_state
from sweeps.store import RunRow, reader


def _missing(name: str, loc: Locations) -> SweepError:
    return SweepError(f"no sweep named {name!r} in {loc.tracking_uri} (see `headsweep list`)")


def find_parent(name: str, loc: Locations) -> RunRow:
    """The parent run of sweep `name`, or a SweepError saying where it was looked for."""
    store = reader(loc)
    found = store.parents(name) if store is not None else []
    if not found:
        raise _missing(name, loc)
    return found[0]


def experiment_of(parent: RunRow, name: str) -> str | None:
    """The sweep's Tune experiment, from its parent run's `headsweep.storage` tag (None without)."""
    storage = parent.tags.get("headsweep.storage", "")
    return experiment_in(storage, name) if storage else None


def state_of(parent: RunRow, name: str) -> str:
    """The sweep's state tag, except that a RUNNING parent whose driver stopped beating is
    "crashed" (sweeps.lock.driver_state): a killed driver cannot update its own tag."""
    if driver_state(parent.status, parent.tags, experiment_of(parent, name)) == "crashed":
        return "crashed"
    return parent.tags.get("headsweep.state", parent.status.lower())


def sweep_status(name: str, loc: Locations) -> dict[str, Any]:
    """A sweep's state from the tracking store alone (no Ray): counts, best metric, duration."""
    store = reader(loc)
    found = store.parents(name) if store is not None else []
    if store is None or not found:
        raise _missing(name, loc)
    parent = found[0]
    tags = parent.tags
    children = store.children(parent)
    counts: dict[str, int] = {}
    for child in children:
        counts[child.status] = counts.get(child.status, 0) + 1
    metric, mode = tags.get("headsweep.metric", ""), tags.get("headsweep.mode", "max")
    scored = [c for c in children if metric in c.metrics]
    best = None
    if scored:
        pick = max if mode == "max" else min
        top = pick(scored, key=lambda c: c.metrics[metric])
        best = {
            "run": top.name,
            "metric": metric,
            "value": top.metrics[metric],
            "post": top.metrics.get(M.partner(metric)),
        }
    end = parent.end_time or int(time.time() * 1000)
    return {
        "name": name,
        "experiment": store.experiment_name(parent.experiment_id),
        "state": state_of(parent, name),
        "trials": int(tags.get("headsweep.num_trials", len(children))),
        "runs": counts,
        "best": best,
        "duration_s": (end - parent.start_time) / 1000,
        "parent_run_id": parent.run_id,
        "storage": tags.get("headsweep.storage", ""),
    }


def list_sweeps(loc: Locations) -> list[dict[str, Any]]:
    store = reader(loc)
    rows = []
    for parent in store.parents() if store is not None else []:
        tags = parent.tags
        name = tags.get("headsweep.sweep", parent.name)
        rows.append(
            {
                "name": name,
                "state": state_of(parent, name),
                "trials": tags.get("headsweep.num_trials", "?"),
                "started": time.strftime(
                    "%Y-%m-%d %H:%M", time.localtime(parent.start_time / 1000)
                ),
            }
        )
    return rows
